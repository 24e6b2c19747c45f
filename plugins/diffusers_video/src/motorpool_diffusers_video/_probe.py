"""What this machine can run, and the install command that fits it.

The quick probe never imports torch or diffusers: it finds the packages with
``importlib``, reads the torch build from its version (``2.x.y+cpu`` is a CPU build)
and the accelerators from files. The deep probe imports torch to list its devices.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys

from motorpool import torchtools
from motorpool.hardware import likely_accelerators
from motorpool.types import Accelerator, Capability, Device, MissingDependency, ProbeReport

CAPABILITIES = frozenset({Capability.VIDEO, Capability.IMAGE_TO_VIDEO})
FORMATS = ("diffusers",)
LIBRARIES = {
    "diffusers": "diffusers",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "imageio": "imageio",
    "imageio-ffmpeg": "imageio_ffmpeg",
}
"""The packages beside torch: distribution name to import name."""
LIBRARIES_INSTALL = (
    "pip install diffusers transformers accelerate safetensors imageio imageio-ffmpeg"
)


def torch_build() -> str | None:
    """The installed torch's version (``2.13.0+cpu``) from its metadata; ``None`` if absent."""
    if not torchtools.torch_installed():
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def missing() -> list[MissingDependency]:
    """The packages this plugin needs that are not installed, with their install commands."""
    found: list[MissingDependency] = []
    if torch_build() is None:
        found.append(
            MissingDependency(
                package="torch",
                install=torchtools.torch_install_command(),
                reason="PyTorch, the build that fits this machine's accelerator",
            )
        )
    found.extend(
        MissingDependency(
            package=name,
            install=LIBRARIES_INSTALL,
            reason="MP4 encoding" if name.startswith("imageio") else "Hugging Face's stack",
        )
        for name, module in LIBRARIES.items()
        if importlib.util.find_spec(module) is None
    )
    return found


def probe(deep: bool) -> ProbeReport:
    """The plugin's probe report; ``deep`` imports torch to ask it for its devices."""
    absent = missing()
    if absent:
        return ProbeReport(
            ready=False, capabilities=CAPABILITIES, formats=FORMATS, missing=tuple(absent)
        )
    build = torch_build() or "?"
    notes = [f"torch {build}"]
    accelerators = likely_accelerators()
    cpu_only = build.endswith("+cpu")
    if deep:
        devices = torchtools.torch_devices()
        device = torchtools.resolve_device("auto")
        dtype = str(torchtools.resolve_dtype("auto", device)).removeprefix("torch.")
        notes.append(f"default device: {device} ({dtype})")
    else:
        devices = [Device(accelerator=Accelerator.CPU, name="cpu")]
        if Accelerator.CUDA in accelerators and not cpu_only:
            devices.append(Device(accelerator=Accelerator.CUDA, name="cuda"))
        if sys.platform == "darwin" and platform.machine() == "arm64":
            devices.append(Device(accelerator=Accelerator.METAL, name="mps"))
    if cpu_only and Accelerator.CUDA in accelerators:
        notes.append(
            f"this torch ({build}) is CPU-only but the machine has an NVIDIA GPU; for the GPU: "
            f"{torchtools.TORCH_CUDA} --force-reinstall"
        )
    return ProbeReport(
        ready=True,
        capabilities=CAPABILITIES,
        formats=FORMATS,
        devices=tuple(devices),
        engine_version=importlib.metadata.version("diffusers"),
        notes=tuple(notes),
    )
