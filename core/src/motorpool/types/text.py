"""Text generation: completion and chat requests, sampling, results."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from motorpool.types._base import Frozen, Timings, Usage

MAX_STOP_SEQUENCES = 16


class Sampling(Frozen):
    """Sampling parameters. ``None`` leaves the engine's default in place."""

    temperature: float | None = Field(default=None, ge=0, le=5)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0, le=10)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    logit_bias: dict[int, float] = Field(default_factory=dict[int, float])


StopSequences = Annotated[
    tuple[Annotated[str, Field(min_length=1)], ...], Field(max_length=MAX_STOP_SEQUENCES)
]


class CompletionRequest(Frozen):
    """Continue a raw prompt."""

    kind: Literal["completion"] = "completion"
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    stop: StopSequences = ()
    sampling: Sampling = Sampling()


class ChatMessage(Frozen):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatRequest(Frozen):
    """Answer a conversation through the model's chat template."""

    kind: Literal["chat"] = "chat"
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    stop: StopSequences = ()
    sampling: Sampling = Sampling()
    chat_template: str | None = None
    """A Jinja template overriding the model's own for this request."""


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
