"""Text generation: completion and chat requests, sampling, results."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from motorpool.types._base import Frozen, Seed, Timings, Usage

MAX_STOP_SEQUENCES = 16

# The bounds of each request field, shared with the server's OpenAI-compatible bodies.
MaxTokens = Annotated[int, Field(ge=1, le=1_000_000)]
Temperature = Annotated[float, Field(ge=0, le=5)]
TopP = Annotated[float, Field(gt=0, le=1)]
TopK = Annotated[int, Field(ge=0)]
MinP = Annotated[float, Field(ge=0, le=1)]
RepeatPenalty = Annotated[float, Field(gt=0, le=10)]


class Sampling(Frozen):
    """Sampling parameters. ``None`` leaves the engine's default in place."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    repeat_penalty: RepeatPenalty | None = None
    seed: Seed | None = None
    logit_bias: dict[int, float] = Field(default_factory=dict[int, float])


class Guards(Frozen):
    """Streaming guards: each ends a stream that went wrong with its own finish reason.

    They apply to every text engine that streams through :func:`motorpool.textgen.stream_text`.
    """

    max_chars: int | None = Field(default=None, ge=1)
    """Output longer than this many characters ends with ``runaway`` (off by default)."""
    max_repeats: int | None = Field(default=8, ge=2, le=1000)
    """The same line, block of lines or short pattern this many times in a row ends with
    ``loop``; ``None`` turns loop detection off."""
    min_tokens_per_s: float | None = Field(default=None, gt=0)
    """A generation rate below this floor, measured over the last few seconds once
    ``grace_s`` have passed since the first token, ends with ``too_slow``."""
    grace_s: float = Field(default=3.0, ge=0, le=3600)


StopSequences = Annotated[
    tuple[Annotated[str, Field(min_length=1)], ...], Field(max_length=MAX_STOP_SEQUENCES)
]


class CompletionRequest(Frozen):
    """Continue a raw prompt."""

    kind: Literal["completion"] = "completion"
    prompt: str = Field(min_length=1)
    max_tokens: MaxTokens = 256
    stop: StopSequences = ()
    sampling: Sampling = Sampling()
    guards: Guards = Guards()


class ChatMessage(Frozen):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatRequest(Frozen):
    """Answer a conversation through the model's chat template."""

    kind: Literal["chat"] = "chat"
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    max_tokens: MaxTokens = 256
    stop: StopSequences = ()
    sampling: Sampling = Sampling()
    guards: Guards = Guards()
    chat_template: str | None = None
    """A Jinja template overriding the model's own for this request."""


TextRequest = CompletionRequest | ChatRequest


class FinishReason(StrEnum):
    """Why a text generation ended."""

    STOP = "stop"
    """The model emitted its end token or a stop sequence matched."""
    LENGTH = "length"
    """``max_tokens`` (or the context) was reached."""
    CANCELLED = "cancelled"
    """Someone cancelled the request; ``text`` holds what was generated so far."""
    RUNAWAY = "runaway"
    """A streaming guard stopped output that ran past its limit."""
    LOOP = "loop"
    """A streaming guard stopped output that repeated itself."""
    TOO_SLOW = "too_slow"
    """A streaming guard stopped output below the tokens-per-second floor."""


class TextResult(Frozen):
    """The outcome of a completion or chat request."""

    kind: Literal["text"] = "text"
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
