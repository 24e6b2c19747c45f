"""What the machine has, found without importing torch or any engine (plugins use it in probes)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import structlog

from motorpool.types import Accelerator, Device, HardwareReport

log = structlog.get_logger(__name__)

_SMI_TIMEOUT_S = 5.0
_MIB = 1024 * 1024


def hardware_report() -> HardwareReport:
    """CPU, memory and accelerators (CUDA via nvidia-smi, ROCm, Apple Metal)."""
    import psutil  # noqa: PLC0415 - 30 ms of import that only this report needs

    memory = psutil.virtual_memory()
    devices = [*_cuda_devices(), *_rocm_devices(), *_metal_devices(memory.total)]
    return HardwareReport(
        system=platform.system(),
        machine=platform.machine(),
        python=sys.version.split()[0],
        cpu_count=os.cpu_count() or 1,
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        accelerators=tuple(devices),
    )


def likely_accelerators() -> frozenset[Accelerator]:
    """Accelerators this machine seems to have, from files alone: no subprocess, no import.

    For quick probes, which must stay fast; :func:`hardware_report` names the devices.
    """
    found: set[Accelerator] = set()
    if shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists():
        found.add(Accelerator.CUDA)
    if Path("/dev/kfd").exists() and Path("/opt/rocm").exists():
        found.add(Accelerator.ROCM)
    if sys.platform == "darwin" and platform.machine() == "arm64":
        found.add(Accelerator.METAL)
    return frozenset(found)


def physical_memory() -> int:
    """Bytes of RAM, cheaply (POSIX sysconf; psutil elsewhere)."""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    import psutil  # noqa: PLC0415

    return psutil.virtual_memory().total


def _cuda_devices() -> list[Device]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(  # noqa: S603 - a fixed command found on PATH
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed; reporting no CUDA device", error=str(exc))
        return []
    devices: list[Device] = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        memory = int(float(mib)) * _MIB if mib.strip().replace(".", "").isdigit() else None
        devices.append(Device(accelerator=Accelerator.CUDA, name=name.strip(), memory_bytes=memory))
    return devices


def _rocm_devices() -> list[Device]:
    if not Path("/dev/kfd").exists() or not Path("/opt/rocm").exists():
        return []
    return [Device(accelerator=Accelerator.ROCM, name="AMD GPU (ROCm)")]


def _metal_devices(unified_memory: int) -> list[Device]:
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return []
    return [
        Device(accelerator=Accelerator.METAL, name="Apple silicon", memory_bytes=unified_memory)
    ]
