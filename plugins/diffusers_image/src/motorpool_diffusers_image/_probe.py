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

from motorpool.hardware import likely_accelerators
from motorpool.types import Accelerator, Capability, Device, MissingDependency, ProbeReport

CAPABILITIES = frozenset({Capability.IMAGE, Capability.IMAGE_TO_IMAGE})
FORMATS = ("diffusers",)
LIBRARIES = ("diffusers", "transformers", "accelerate", "safetensors")
"""The packages beside torch, by distribution name (each imports under the same name)."""
LIBRARIES_INSTALL = "pip install diffusers transformers accelerate safetensors"

TORCH_CUDA = "pip install torch"
"""Linux x86-64: PyPI's torch is the CUDA build."""
TORCH_CPU = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
"""Linux without a GPU: the CPU build (a few hundred MB instead of several GB)."""
TORCH_ROCM = "pip install torch --index-url https://download.pytorch.org/whl/rocm6.4"
TORCH_WINDOWS_CUDA = "pip install torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_DEFAULT = "pip install torch"
"""macOS (MPS on Apple silicon) and Windows without a GPU."""


def torch_install_command(
    system: str = sys.platform, accelerators: frozenset[Accelerator] | None = None
) -> str:
    """The pip command that installs the right torch build for a machine (this one by default)."""
    found = likely_accelerators() if accelerators is None else accelerators
    if system.startswith("linux"):
        if Accelerator.CUDA in found:
            return TORCH_CUDA
        return TORCH_ROCM if Accelerator.ROCM in found else TORCH_CPU
    if system == "win32" and Accelerator.CUDA in found:
        return TORCH_WINDOWS_CUDA
    return TORCH_DEFAULT


def torch_build() -> str | None:
    """The installed torch's version (``2.13.0+cpu``) from its metadata; ``None`` if absent."""
    if importlib.util.find_spec("torch") is None:
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
                install=torch_install_command(),
                reason="PyTorch, the build that fits this machine's accelerator",
            )
        )
    absent = [name for name in LIBRARIES if importlib.util.find_spec(name) is None]
    found.extend(
        MissingDependency(package=name, install=LIBRARIES_INSTALL, reason="Hugging Face's stack")
        for name in absent
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
        from motorpool import torchtools  # noqa: PLC0415 - the deep probe may import torch

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
            f"{TORCH_CUDA} --force-reinstall"
        )
    return ProbeReport(
        ready=True,
        capabilities=CAPABILITIES,
        formats=FORMATS,
        devices=tuple(devices),
        engine_version=importlib.metadata.version("diffusers"),
        notes=tuple(notes),
    )
