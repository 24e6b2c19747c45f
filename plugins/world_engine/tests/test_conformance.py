"""The core's conformance suite, run against this plugin's tiny world model."""

from __future__ import annotations

from motorpool.testing import EngineConformance


class TestWorldEngine(EngineConformance):
    """Discovery, probe, load, sessions, cancel, unload and bad input, as every plugin."""

    plugin = "world-engine"
