"""Test kit for engine plugins: the conformance suite every plugin runs against itself.

Needs pytest (``pip install 'motorpool[testing]'``). In a plugin's tests::

    from motorpool.testing import EngineConformance

    class TestMyEngine(EngineConformance):
        plugin = "myengine"  # the entry-point name in group motorpool.engines
"""

from __future__ import annotations

try:
    import pytest
except ImportError as exc:
    raise ImportError(
        "motorpool.testing needs pytest: pip install 'motorpool[testing]'", name=exc.name
    ) from exc

# Rewrite the suite's asserts (as in a test module) so failures show the values compared.
pytest.register_assert_rewrite("motorpool.testing._conformance")

from motorpool.testing._conformance import (  # noqa: E402 - must follow register_assert_rewrite
    EngineConformance,
    assert_batch_fits,
    assert_result_answers,
    assert_well_formed_stream,
    request_for,
)

__all__ = [
    "EngineConformance",
    "assert_batch_fits",
    "assert_result_answers",
    "assert_well_formed_stream",
    "request_for",
]
