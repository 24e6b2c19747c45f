"""How the host reports each installed plugin."""

from __future__ import annotations

from enum import StrEnum

from motorpool.types._base import Frozen
from motorpool.types.probe import ProbeReport


class PluginState(StrEnum):
    """Where discovery left a plugin."""

    LOADED = "loaded"
    DISABLED = "disabled"
    """Installed, but not in ``MOTORPOOL_PLUGINS``; its code was never imported."""
    FAILED = "failed"
    """It failed to import, to validate, or lacks a required hook; ``error`` says why."""


class PluginInfo(Frozen):
    """One entry point of group ``motorpool.engines`` and what became of it."""

    name: str
    state: PluginState
    entry_point: str
    distribution: str | None = None
    version: str | None = None
    hooks: tuple[str, ...] = ()
    error: str | None = None
    hint: str | None = None


class PluginProbe(Frozen):
    """A plugin's probe report, or why probing it failed."""

    plugin: str
    state: PluginState
    report: ProbeReport | None = None
    error: str | None = None
