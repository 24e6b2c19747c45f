"""The core's conformance suite, run against the diffusers image plugin and its tiny model."""

from __future__ import annotations

from motorpool.testing import EngineConformance


class TestDiffusersImage(EngineConformance):
    plugin = "diffusers-image"
