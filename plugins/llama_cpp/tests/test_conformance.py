"""The llama.cpp plugin passes the core's engine conformance suite on its tiny model."""

from motorpool.testing import EngineConformance


class TestLlamaCpp(EngineConformance):
    plugin = "llama-cpp"
