"""The core's conformance suite, run against the MLX plugin and its tiny model."""

from __future__ import annotations

from motorpool.testing import EngineConformance


class TestMlx(EngineConformance):
    plugin = "mlx"
