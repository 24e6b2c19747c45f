"""What a stream yields: a discriminated union on ``type`` that any frontend can decode.

A well-formed stream is zero or more ``token`` / ``progress`` / ``frame`` events followed
by exactly one terminal event, ``result`` or ``error``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from motorpool.types._base import ErrorInfo, Frozen
from motorpool.types.image import ImageRequest, ImageResult
from motorpool.types.text import ChatRequest, CompletionRequest, TextResult
from motorpool.types.video import VideoRequest, VideoResult

GenerationRequest = Annotated[
    CompletionRequest | ChatRequest | ImageRequest | VideoRequest, Field(discriminator="kind")
]
GenerationResult = Annotated[TextResult | ImageResult | VideoResult, Field(discriminator="kind")]


class TokenEvent(Frozen):
    """A piece of generated text."""

    type: Literal["token"] = "token"
    text: str


class ProgressEvent(Frozen):
    """A step of a long stage: download, load, denoising, encoding."""

    type: Literal["progress"] = "progress"
    stage: str = Field(min_length=1)
    step: int = Field(ge=0)
    total: int | None = Field(default=None, ge=0)


class FrameEvent(Frozen):
    """A preview or finished frame (PNG or JPEG)."""

    type: Literal["frame"] = "frame"
    index: int = Field(ge=0)
    image: bytes
    media_type: Literal["image/png", "image/jpeg"] = "image/png"


class ResultEvent(Frozen):
    """The final result, with usage and timings. Terminal."""

    type: Literal["result"] = "result"
    result: GenerationResult


class ErrorEvent(Frozen):
    """The generation failed or was cancelled. Terminal."""

    type: Literal["error"] = "error"
    error: ErrorInfo


StreamEvent = Annotated[
    TokenEvent | ProgressEvent | FrameEvent | ResultEvent | ErrorEvent,
    Field(discriminator="type"),
]
TerminalEvent = ResultEvent | ErrorEvent

STREAM_EVENT_ADAPTER: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
REQUEST_ADAPTER: TypeAdapter[GenerationRequest] = TypeAdapter(GenerationRequest)
