"""What every text engine needs around its token loop, written once.

An engine plugin turns its library's token loop into an iterator of text pieces, one
per generated token ("" while a multi-byte character is incomplete), and hands it to
:func:`stream_text`, which does the rest the same way for every engine:

- ``max_tokens`` (and the engine's own limit, such as the room left in the context);
- stop sequences, holding back text that may be the start of one, so a stop sequence
  never reaches the client even when it arrives split across tokens;
- cancellation, checked before every token, so decoding stops within one token;
- the streaming guards of :class:`~motorpool.types.Guards` (runaway, loop, too slow);
- the final :class:`~motorpool.types.TextResult` with usage and timings.

Ending early closes the iterator, which stops the engine's decoding at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from motorpool.engine import Context
from motorpool.types import (
    FinishReason,
    Guards,
    ResultEvent,
    StreamEvent,
    TextRequest,
    TextResult,
    Timings,
    TokenEvent,
    Usage,
)

MAX_PATTERN_CHARS = 32
"""Longest unit the loop guard looks for inside a line ("the the the ...")."""
MIN_PATTERN_SPAN = 48
"""A pattern counts as a loop only once its repeats cover this many characters."""
MAX_BLOCK_LINES = 4
"""Longest block of lines the loop guard looks for."""
RATE_WINDOW_S = 3.0
"""The tokens-per-second floor is measured over this window."""
_CHECK_EVERY_CHARS = 8
_TAIL_CHARS = 1024


class StopMatcher:
    """Finds stop sequences in streamed text and holds back what may start one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, piece: str) -> tuple[str, bool]:
        """Feed a piece; return the text safe to emit and whether a stop sequence matched.

        On a match the text before the stop sequence is returned and the rest dropped.
        """
        if not self._stops:
            return piece, False
        text = self._held + piece
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self._held = ""
            return text[: min(found)], True
        keep = max((_overlap(text, s) for s in self._stops), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held-back text, when the stream ends without a stop sequence."""
        held, self._held = self._held, ""
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0


class StreamGuard:
    """Watches emitted text and token timing; :meth:`check` names the guard that tripped."""

    def __init__(self, guards: Guards, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._guards = guards
        self._clock = clock
        self._chars = 0
        self._tail = ""
        self._unchecked = 0
        self._line = ""
        self._lines: deque[str] = deque(maxlen=MAX_BLOCK_LINES * (guards.max_repeats or 1))
        self._first: float | None = None
        self._stamps: deque[float] = deque()

    def check(self, text: str) -> FinishReason | None:
        """Account for one token's text; return a finish reason when a guard trips."""
        guards = self._guards
        self._chars += len(text)
        if guards.max_chars is not None and self._chars > guards.max_chars:
            return FinishReason.RUNAWAY
        if guards.max_repeats is not None and text and self._loops(text, guards.max_repeats):
            return FinishReason.LOOP
        if guards.min_tokens_per_s is not None and self._too_slow(guards):
            return FinishReason.TOO_SLOW
        return None

    def _loops(self, text: str, repeats: int) -> bool:
        self._tail = (self._tail + text)[-_TAIL_CHARS:]
        if "\n" in text:
            *complete, line = (self._line + text).split("\n")
            self._line = line[-_TAIL_CHARS:]
            for done in complete:
                if _has_words(done):  # blank lines and lone braces do not break a repeat
                    self._lines.append(done.strip())
            if self._repeated_block(repeats):
                return True
        else:
            self._line = (self._line + text)[-_TAIL_CHARS:]
        self._unchecked += len(text)
        if self._unchecked < _CHECK_EVERY_CHARS:
            return False
        self._unchecked = 0
        return self._repeated_pattern(repeats)

    def _repeated_block(self, repeats: int) -> bool:
        lines = list(self._lines)
        for size in range(1, MAX_BLOCK_LINES + 1):
            block = lines[-size:]
            if len(lines) >= size * repeats and lines[-size * repeats :] == block * repeats:
                return True
        return False

    def _repeated_pattern(self, repeats: int) -> bool:
        tail = self._tail
        last = tail[-1]
        for size in range(1, MAX_PATTERN_CHARS + 1):
            times = max(repeats, math.ceil(MIN_PATTERN_SPAN / size))
            if size * times > len(tail):
                break
            if tail[-1 - size] != last:  # cheap: most periods fail on the last character
                continue
            unit = tail[-size:]
            if tail.endswith(unit * times) and _has_words(unit):
                return True
        return False

    def _too_slow(self, guards: Guards) -> bool:
        now = self._clock()
        if self._first is None:
            self._first = now
        self._stamps.append(now)
        while self._stamps[0] < now - RATE_WINDOW_S:
            self._stamps.popleft()
        if now - self._first < max(guards.grace_s, RATE_WINDOW_S):
            return False
        return len(self._stamps) / RATE_WINDOW_S < (guards.min_tokens_per_s or 0)


def _has_words(text: str) -> bool:
    """True when ``text`` holds a letter or digit (rules of dashes are not loops)."""
    return any(c.isalnum() for c in text)


def stream_text(
    pieces: Iterator[str],
    request: TextRequest,
    context: Context,
    *,
    prompt_tokens: int,
    max_tokens: int | None = None,
    stops: Iterable[str] = (),
    peak_memory: Callable[[], int | None] | None = None,
) -> Iterator[StreamEvent]:
    """Token events for an engine's text pieces, then the result.

    :param pieces:
        One item per generated token: its text, or ``""`` while a character is
        incomplete. The iterator ends when the engine stops on its own (an end token):
        the finish reason is then ``stop``. Closed (if it is a generator) as soon as the
        stream ends for any other reason, which stops the engine.
    :param request:
        The request: ``max_tokens``, ``stop`` and ``guards`` apply.
    :param context:
        Checked before every token; a cancelled stream ends with ``cancelled``.
    :param prompt_tokens:
        The prompt's length in tokens, for usage and the prompt rate.
    :param max_tokens:
        The engine's own limit (room left in the context), when lower than the request's;
        reaching it ends with ``length``.
    :param stops:
        Stop sequences of the chat format, beside the request's own.
    :param peak_memory:
        Called once at the end for the engine's peak memory in bytes, when it tracks one.
    """
    started = time.perf_counter()
    limit = request.max_tokens if max_tokens is None else min(request.max_tokens, max_tokens)
    matcher = StopMatcher((*request.stop, *stops))
    guard = StreamGuard(request.guards)
    parts: list[str] = []
    produced = 0
    first: float | None = None
    last = started
    finish = FinishReason.LENGTH
    try:
        while produced < limit:
            if context.cancelled:
                finish = FinishReason.CANCELLED
                break
            piece = next(pieces, None)
            if piece is None:
                finish = FinishReason.STOP
                break
            last = time.perf_counter()
            first = last - started if first is None else first
            produced += 1
            text, stopped = matcher.push(piece)
            if text:
                parts.append(text)
                yield TokenEvent(text=text)
            if stopped:
                finish = FinishReason.STOP
                break
            tripped = guard.check(piece)
            if tripped is not None:
                finish = tripped
                break
    finally:
        close = getattr(pieces, "close", None)
        if callable(close):
            close()
    if finish in (FinishReason.LENGTH, FinishReason.STOP) and (held := matcher.flush()):
        parts.append(held)  # the end came before the stop sequence could complete
        yield TokenEvent(text=held)
    total = time.perf_counter() - started
    rate = None
    if first is not None and produced > 1 and last - started > first:
        rate = (produced - 1) / (last - started - first)  # the first token is the prompt's
    yield ResultEvent(
        result=TextResult(
            text="".join(parts),
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=produced),
            timings=Timings(
                total_s=total,
                first_output_s=first,
                prompt_tokens_per_s=prompt_tokens / first if first else None,
                output_tokens_per_s=rate,
                peak_memory_bytes=peak_memory() if peak_memory is not None else None,
            ),
        )
    )
