"""The text streaming every text engine shares: stops, limits, cancellation, guards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from motorpool.engine import Context
from motorpool.textgen import StopMatcher, StreamGuard, stream_text
from motorpool.types import (
    CompletionRequest,
    FinishReason,
    Guards,
    ResultEvent,
    StreamEvent,
    TextResult,
    TokenEvent,
)


def request(**fields: object) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": "hi", **fields})


class Pieces:
    """An engine's token loop: yields the given pieces and records how far it ran."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self.pieces:
                self.pulled += 1
                yield piece
        finally:
            self.closed = True


def run(
    pieces: list[str], context: Context | None = None, **fields: object
) -> tuple[list[str], TextResult, Pieces]:
    engine = Pieces(pieces)
    events: list[StreamEvent] = list(
        stream_text(iter(engine), request(**fields), context or Context("t"), prompt_tokens=3)
    )
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    final = events[-1]
    assert isinstance(final, ResultEvent)
    assert isinstance(final.result, TextResult)
    return tokens, final.result, engine


def test_an_engine_that_ends_on_its_own_finishes_with_stop() -> None:
    tokens, result, engine = run(["Hel", "lo", "", " world"])
    assert tokens == ["Hel", "lo", " world"]  # an empty piece (half a character) is no event
    assert result.text == "Hello world"
    assert result.finish_reason is FinishReason.STOP
    assert result.usage.prompt_tokens == 3
    assert result.usage.completion_tokens == 4
    assert result.timings.first_output_s is not None
    assert engine.closed


def test_max_tokens_ends_with_length_and_stops_the_engine() -> None:
    tokens, result, engine = run(["a"] * 10, max_tokens=3)
    assert "".join(tokens) == "aaa"
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.completion_tokens == 3
    assert engine.pulled == 3
    assert engine.closed


def test_engine_limit_below_the_request_limit_wins() -> None:
    engine = Pieces(["x"] * 10)
    events = list(
        stream_text(
            iter(engine), request(max_tokens=8), Context("t"), prompt_tokens=1, max_tokens=2
        )
    )
    final = events[-1]
    assert isinstance(final, ResultEvent)
    assert isinstance(final.result, TextResult)
    assert final.result.usage.completion_tokens == 2
    assert final.result.finish_reason is FinishReason.LENGTH


def test_a_stop_sequence_split_across_tokens_never_reaches_the_client() -> None:
    tokens, result, engine = run(["one ", "two", " EN", "D three"], stop=["END"])
    assert "".join(tokens) == "one two "
    assert result.text == "one two "
    assert result.finish_reason is FinishReason.STOP
    assert engine.pulled == 4
    assert engine.closed


def test_held_text_that_was_not_a_stop_is_sent_at_the_end() -> None:
    tokens, result, _ = run(["value: E", "N"], stop=["END"])
    assert "".join(tokens) == "value: EN"
    assert result.text == "value: EN"


def test_matcher_holds_back_only_a_possible_start() -> None:
    matcher = StopMatcher(["</s>", "STOP"])
    assert matcher.push("abc<") == ("abc", False)
    assert matcher.push("b>") == ("<b>", False)
    assert matcher.push("xST") == ("x", False)
    assert matcher.push("OP tail") == ("", True)


def test_cancelling_ends_within_one_token() -> None:
    context = Context("t")
    engine = Pieces(["a"] * 100)
    stream = stream_text(iter(engine), request(max_tokens=100), context, prompt_tokens=1)
    assert next(stream) == TokenEvent(text="a")
    context.cancel()
    rest = list(stream)
    final = rest[-1]
    assert isinstance(final, ResultEvent)
    assert isinstance(final.result, TextResult)
    assert final.result.finish_reason is FinishReason.CANCELLED
    assert engine.pulled == 1  # no token was decoded after the cancel
    assert engine.closed


def test_runaway_guard() -> None:
    tokens, result, engine = run(["abcd"] * 50, max_tokens=50, guards={"max_chars": 10})
    assert result.finish_reason is FinishReason.RUNAWAY
    assert engine.pulled == 3
    assert len("".join(tokens)) == 12


def test_repeated_lines_are_a_loop() -> None:
    pieces = ["Intro line.\n", *["I will say it again.\n"] * 20]
    _, result, engine = run(pieces, max_tokens=100)
    assert result.finish_reason is FinishReason.LOOP
    assert engine.pulled == 1 + 8  # the default: 8 repeats


def test_a_repeated_block_of_lines_is_a_loop() -> None:
    pieces = ["first\n", "second\n", "\n"] * 10
    _, result, _ = run(pieces, max_tokens=100, guards={"max_repeats": 3})
    assert result.finish_reason is FinishReason.LOOP


def test_a_repeated_phrase_without_newlines_is_a_loop() -> None:
    _, result, engine = run(["the end "] * 40, max_tokens=100)
    assert result.finish_reason is FinishReason.LOOP
    assert engine.pulled < 40


@pytest.mark.parametrize(
    "text",
    [
        "# " + "-" * 120 + "\n",  # a rule of dashes
        "}\n" * 12,  # closing braces
        "\n".join(f"item {i}: value" for i in range(40)),  # similar but different lines
        "0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0 " * 2,
    ],
)
def test_ordinary_text_is_not_a_loop(text: str) -> None:
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    _, result, _ = run(pieces, max_tokens=1000)
    assert result.finish_reason is FinishReason.STOP


def test_loop_detection_can_be_turned_off() -> None:
    _, result, _ = run(["again\n"] * 30, max_tokens=30, guards={"max_repeats": None})
    assert result.finish_reason is FinishReason.LENGTH


def test_too_slow_guard_waits_for_the_grace_period() -> None:
    now = [0.0]
    guard = StreamGuard(Guards(min_tokens_per_s=5, grace_s=1), clock=lambda: now[0])
    for _ in range(10):  # 2 tokens/s for 5 s: below the floor of 5
        now[0] += 0.5
        reason = guard.check("word ")
        if reason is not None:
            break
    assert reason is FinishReason.TOO_SLOW
    assert now[0] >= 3  # measured over a full window after the first token


def test_fast_enough_streams_pass_the_floor() -> None:
    now = [0.0]
    guard = StreamGuard(Guards(min_tokens_per_s=5, grace_s=0), clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.1  # 10 tokens/s
        assert guard.check(f"w{now[0]:.1f} ") is None
