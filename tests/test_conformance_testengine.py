"""The test plugins run the engine conformance suite, as any third-party plugin would."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from motorpool.engine import TinyModel
from motorpool.testing import EngineConformance, assert_well_formed_stream
from motorpool.types import (
    ErrorEvent,
    ErrorInfo,
    ImageRequest,
    ImageResult,
    ModelSpec,
    ProgressEvent,
    ResultEvent,
    StreamEvent,
    Timings,
    TokenEvent,
)
from motorpool_testengine.plugin import SUFFIX, write_model


class TestTestEngine(EngineConformance):
    """The streaming test engine, with the tiny model its hook builds."""

    plugin = "testengine"


class TestGenerateOnlyEngine(EngineConformance):
    """The generate-only engine: no tiny-model hook, so the fixture is overridden."""

    plugin = "testengine-generate-only"

    @pytest.fixture
    def tiny_model(self, tmp_path: Path) -> TinyModel:
        path = write_model(tmp_path / f"tiny{SUFFIX}")
        return TinyModel(
            spec=ModelSpec(plugin=self.plugin, source=str(path)),
            request=ImageRequest(prompt="x", width=16, height=16, steps=2),
        )


# -------------------------------------------------------------------------------------------
# The helpers catch malformed streams
# -------------------------------------------------------------------------------------------

RESULT = ResultEvent(
    result=ImageResult.model_validate(
        {"images": [{"png": b"\x89PNG", "width": 8, "height": 8}], "timings": Timings(total_s=0)}
    )
)
ERROR = ErrorEvent(error=ErrorInfo(code="cancelled", message="stop"))


def test_a_well_formed_stream_passes() -> None:
    events: list[StreamEvent] = [
        ProgressEvent(stage="denoise", step=1, total=2),
        ProgressEvent(stage="denoise", step=2, total=2),
        RESULT,
    ]
    assert assert_well_formed_stream(events) is RESULT
    assert assert_well_formed_stream([ERROR]) is ERROR


@pytest.mark.parametrize(
    ("events", "complaint"),
    [
        pytest.param([], "no event", id="empty"),
        pytest.param([TokenEvent(text="a")], "exactly one terminal", id="no-terminal"),
        pytest.param([RESULT, ERROR], "exactly one terminal", id="two-terminals"),
        pytest.param([RESULT, TokenEvent(text="a")], "not last", id="terminal-not-last"),
        pytest.param(
            [ProgressEvent(stage="s", step=2), ProgressEvent(stage="s", step=1), RESULT],
            "went back",
            id="progress-backwards",
        ),
        pytest.param(
            [ProgressEvent(stage="s", step=3, total=2), RESULT], "past its total", id="past-total"
        ),
    ],
)
def test_a_malformed_stream_fails(events: list[StreamEvent], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        assert_well_formed_stream(events)


def test_without_pytest_the_import_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n.startswith("motorpool.testing")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pytest", None)  # None makes `import pytest` fail
    with pytest.raises(ImportError, match=r"pip install 'motorpool\[testing\]'"):
        importlib.import_module("motorpool.testing")
