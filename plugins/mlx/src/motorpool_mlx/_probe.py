"""What this machine can run, and the install command that fits it.

MLX runs on Apple silicon (the plain ``mlx`` wheel brings Metal) and on Linux, where
``mlx`` itself carries no backend: the CPU build comes with ``mlx[cpu]`` (the
``mlx-cpu`` distribution), CUDA builds with ``mlx[cuda12]`` / ``mlx[cuda13]``. The quick
probe never imports mlx: it finds the packages with ``importlib`` and tells the build
from the distributions installed beside it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys

from motorpool.hardware import likely_accelerators
from motorpool.types import Accelerator, Capability, Device, MissingDependency, ProbeReport

CAPABILITIES = frozenset({Capability.COMPLETION, Capability.CHAT})
FORMATS = ("mlx", "safetensors")
MACOS_INSTALL = "pip install mlx-lm"
LINUX_INSTALL = "pip install 'mlx[cpu]' mlx-lm"
MIN_GLIBC = (2, 35)
"""MLX's Linux wheels are built for glibc 2.35 and later."""

# The distributions that give mlx a backend on Linux.
_LINUX_BACKENDS = {
    "mlx-cpu": Accelerator.CPU,
    "mlx-cuda-12": Accelerator.CUDA,
    "mlx-cuda-13": Accelerator.CUDA,
}


def unsupported_platform(
    system: str = sys.platform,
    machine: str | None = None,
    libc: tuple[str, str] | None = None,
) -> str | None:
    """Why MLX cannot run on a machine at all, or ``None`` when it can.

    :param system: ``sys.platform`` of the machine (this one by default).
    :param machine: ``platform.machine()`` (this one's by default).
    :param libc: ``platform.libc_ver()`` (this one's by default; read only on Linux).
    """
    machine = platform.machine() if machine is None else machine
    if system == "darwin":
        if machine != "arm64":
            return f"MLX needs Apple silicon (arm64); this Mac is {machine}"
        return None
    if system.startswith("linux"):
        name, version = platform.libc_ver() if libc is None else libc
        numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if name == "glibc" and len(numbers) == len(MIN_GLIBC) and numbers < MIN_GLIBC:
            return (
                f"MLX's Linux wheels need glibc {'.'.join(map(str, MIN_GLIBC))} or newer; "
                f"this machine has {version}"
            )
        return None
    return (
        "MLX runs on Apple silicon (macOS, Metal) and on Linux (CPU or CUDA builds); "
        f"this machine runs {system} on {machine or 'an unknown processor'}"
    )


def install_command(system: str = sys.platform) -> str:
    """The pip command that installs MLX and mlx-lm for a platform (this one by default)."""
    return MACOS_INSTALL if system == "darwin" else LINUX_INSTALL


def linux_backends() -> frozenset[Accelerator]:
    """Backends of the mlx build installed on Linux (empty: mlx without a backend)."""
    found: set[Accelerator] = set()
    for distribution, accelerator in _LINUX_BACKENDS.items():
        try:
            importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.add(accelerator)
    return frozenset(found)


def _missing() -> list[MissingDependency]:
    command = install_command()
    missing: list[MissingDependency] = []
    if importlib.util.find_spec("mlx") is None:
        package = "mlx" if sys.platform == "darwin" else "mlx[cpu]"
        missing.append(MissingDependency(package=package, install=command, reason="MLX itself"))
    elif sys.platform != "darwin" and not linux_backends():
        missing.append(
            MissingDependency(
                package="mlx[cpu]",
                install="pip install 'mlx[cpu]'",
                reason="mlx is installed without a backend; on Linux it needs the CPU "
                "build (or mlx[cuda12] on an NVIDIA machine)",
            )
        )
    if importlib.util.find_spec("mlx_lm") is None:
        missing.append(
            MissingDependency(package="mlx-lm", install=command, reason="MLX's LLM library")
        )
    return missing


def probe(deep: bool) -> ProbeReport:
    """The plugin's probe report; ``deep`` imports mlx to ask it for its devices."""
    reason = unsupported_platform()
    if reason is not None:
        return ProbeReport(ready=False, capabilities=CAPABILITIES, formats=FORMATS, notes=(reason,))
    missing = _missing()
    if missing:
        return ProbeReport(
            ready=False, capabilities=CAPABILITIES, formats=FORMATS, missing=tuple(missing)
        )
    notes: list[str] = [f"mlx {importlib.metadata.version('mlx')}"]
    if deep:
        from motorpool_mlx import _engine  # noqa: PLC0415 - the deep probe may import mlx

        devices = _engine.devices()
        notes.append(f"default device: {_engine.default_device()}")
    else:
        devices = [Device(accelerator=Accelerator.CPU, name="cpu")]
        if sys.platform == "darwin":
            devices.append(Device(accelerator=Accelerator.METAL, name="Apple silicon"))
        elif Accelerator.CUDA in linux_backends() & likely_accelerators():
            devices.append(Device(accelerator=Accelerator.CUDA, name="cuda"))
    if sys.platform != "darwin" and Accelerator.CUDA in likely_accelerators() - linux_backends():
        notes.append(
            "this mlx build is CPU-only but the machine has CUDA; for the GPU run: "
            "pip install 'mlx[cuda12]'"
        )
    return ProbeReport(
        ready=True,
        capabilities=CAPABILITIES,
        formats=FORMATS,
        devices=tuple(devices),
        engine_version=importlib.metadata.version("mlx-lm"),
        notes=tuple(notes),
    )
