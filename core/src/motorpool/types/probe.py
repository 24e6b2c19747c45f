"""Probe reports: what a plugin can do on this machine, and what it is missing."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from motorpool.types._base import Capability, Frozen


class Accelerator(StrEnum):
    """A compute backend."""

    CPU = "cpu"
    CUDA = "cuda"
    ROCM = "rocm"
    METAL = "metal"
    VULKAN = "vulkan"


class Device(Frozen):
    """One device a plugin (or the host) can run on."""

    accelerator: Accelerator
    name: str
    memory_bytes: int | None = None


class MissingDependency(Frozen):
    """Something the plugin needs that is not installed, and how to install it."""

    package: str
    install: str
    """The exact command for this machine, e.g. ``pip install 'mlx[cpu]'``."""
    reason: str | None = None


class ProbeReport(Frozen):
    """A plugin's answer to ``motorpool_probe``."""

    ready: bool
    """True when the plugin can load models on this machine now."""
    capabilities: frozenset[Capability] = frozenset()
    formats: tuple[str, ...] = ()
    """Model formats it loads, e.g. ``gguf``, ``diffusers``, ``mlx``."""
    devices: tuple[Device, ...] = ()
    missing: tuple[MissingDependency, ...] = ()
    engine_version: str | None = None
    notes: tuple[str, ...] = ()
    """Anything else the user should know (e.g. "CPU-only build on a CUDA machine")."""


class HardwareReport(Frozen):
    """The machine, as the host sees it without importing any engine."""

    system: str
    machine: str
    python: str
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    accelerators: tuple[Device, ...] = Field(default=())
