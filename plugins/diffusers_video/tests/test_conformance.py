"""The core's conformance suite, run against the diffusers video plugin and its tiny Wan model."""

from __future__ import annotations

from motorpool.testing import EngineConformance


class TestDiffusersVideo(EngineConformance):
    plugin = "diffusers-video"
