"""OpenAI-compatible request and response bodies (``/v1/...``).

Requests accept the fields of OpenAI's API that motorpool honours plus a few common
extensions (``top_k``, ``min_p``, ``repeat_penalty``, ``negative_prompt``, ``steps``,
``guidance``); any other field is rejected with a message naming it, so nothing a
client asks for is silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from motorpool.types._base import Frozen, Seed
from motorpool.types.image import MAX_IMAGE_SIDE, Guidance, Steps
from motorpool.types.text import (
    MAX_STOP_SEQUENCES,
    Guards,
    MaxTokens,
    MinP,
    RepeatPenalty,
    Temperature,
    TopK,
    TopP,
)
from motorpool.types.video import Fps, FrameCount

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
MAX_N = 16
MIN_SIDE = 8


def parse_size(size: str) -> tuple[int, int]:
    """``"512x768"`` → ``(512, 768)``; each side between 8 and ``MAX_IMAGE_SIDE``."""
    match = SIZE_PATTERN.match(size)
    if match is None:
        raise ValueError(f"size must look like 512x512, got {size!r}")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIDE <= width <= MAX_IMAGE_SIDE and MIN_SIDE <= height <= MAX_IMAGE_SIDE):
        raise ValueError(f"each side of size must be {MIN_SIDE} to {MAX_IMAGE_SIDE}, got {size!r}")
    return width, height


# -- text ----------------------------------------------------------------------------------


class TextPart(Frozen):
    """A text part of a message's content list."""

    type: Literal["text"]
    text: str


Role = Literal["system", "developer", "user", "assistant", "tool"]


class ChatCompletionMessage(Frozen):
    """One message of a chat request (``developer`` counts as ``system``)."""

    role: Role
    content: str | tuple[TextPart, ...]
    name: str | None = None

    @property
    def text(self) -> str:
        """The content as one string (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Frozen):
    """Options of a streamed response."""

    include_usage: bool = False


Stop = str | Annotated[tuple[str, ...], Field(max_length=MAX_STOP_SEQUENCES)] | None


class _TextRequest(Frozen):
    model: str = Field(min_length=1)
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: MinP | None = None
    repeat_penalty: RepeatPenalty | None = None
    seed: Seed | None = None
    stop: Stop = None
    n: Literal[1] = 1
    """Only one choice per request; send several requests for more."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[int, float] | None = None
    user: str | None = None
    guards: Guards | None = None
    """motorpool's streaming guards (runaway, loop, too slow); default: loop detection only."""

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        """``stop`` as a tuple, empty strings dropped."""
        stops = (self.stop,) if isinstance(self.stop, str) else self.stop or ()
        return tuple(s for s in stops if s)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _TextRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self


class ChatCompletionRequest(_TextRequest):
    """``POST /v1/chat/completions``."""

    messages: tuple[ChatCompletionMessage, ...] = Field(min_length=1)
    max_completion_tokens: MaxTokens | None = None


class CompletionRequest(_TextRequest):
    """``POST /v1/completions``."""

    prompt: str = Field(min_length=1)
    echo: Literal[False] = False


class UsageOut(Frozen):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(Frozen):
    """The generated message."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(Frozen):
    """The one choice of a chat completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str
    """``stop``, ``length``; motorpool adds ``cancelled``, ``runaway``, ``loop``, ``too_slow``."""
    logprobs: None = None


class ChatCompletion(Frozen):
    """The response of a non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: tuple[ChatChoice, ...]
    usage: UsageOut


class ChatDelta(Frozen):
    """What a chunk adds to the message."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(Frozen):
    """A chunk's choice."""

    index: int = 0
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Frozen):
    """One SSE ``data:`` of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: tuple[ChatChunkChoice, ...]
    usage: UsageOut | None = None


class CompletionChoice(Frozen):
    """The one choice of a text completion (also a streamed chunk's choice)."""

    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Completion(Frozen):
    """The response of a text completion, or one chunk of a streamed one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: tuple[CompletionChoice, ...]
    usage: UsageOut | None = None


# -- models --------------------------------------------------------------------------------


class ModelCard(Frozen):
    """One entry of ``GET /v1/models``: an alias or a loaded model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    """The plugin that serves it (``auto`` when it is chosen at load)."""
    status: str
    """``available`` (an alias, not loaded) or the model's lifecycle state."""


class ModelList(Frozen):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: tuple[ModelCard, ...]


# -- images --------------------------------------------------------------------------------


class ImageGenerationRequest(Frozen):
    """``POST /v1/images/generations``."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=100_000)
    n: int = Field(default=1, ge=1, le=MAX_N)
    size: str | None = None
    """``WIDTHxHEIGHT``; the model's native size when omitted."""
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png"] = "png"
    seed: Seed | None = None
    negative_prompt: str | None = None
    steps: Steps | None = None
    guidance: Guidance | None = None
    quality: str | None = None
    """Accepted for compatibility; the model's settings decide the quality."""
    style: str | None = None
    """Accepted for compatibility and ignored."""
    user: str | None = None

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: str | None) -> str | None:
        if size is not None and size != "auto":
            parse_size(size)
        return size

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """Width and height, or ``None`` for the model's default."""
        return None if self.size in {None, "auto"} else parse_size(str(self.size))


class ImageData(Frozen):
    """One generated image: inline base64 or a URL served by this host."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(Frozen):
    """The response of an image generation."""

    created: int
    data: tuple[ImageData, ...]
    output_format: Literal["png"] = "png"


# -- videos --------------------------------------------------------------------------------

VideoStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled"]


class VideoCreateRequest(Frozen):
    """``POST /v1/videos`` (JSON or multipart form, as the OpenAI SDK sends it)."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=100_000)
    seconds: float | None = Field(default=None, gt=0, le=600)
    """Duration; becomes ``seconds * fps + 1`` frames unless ``frames`` is given."""
    size: str | None = None
    frames: FrameCount | None = None
    fps: Fps | None = None
    steps: Steps | None = None
    guidance: Guidance | None = None
    seed: Seed | None = None
    negative_prompt: str | None = None

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: str | None) -> str | None:
        if size is not None:
            parse_size(size)
        return size


class VideoError(Frozen):
    """Why a video job failed."""

    code: str
    message: str


class VideoJob(Frozen):
    """A video generation job (``GET /v1/videos/{id}``)."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: VideoStatus
    progress: int = Field(ge=0, le=100)
    """Percent of denoising steps done."""
    stage: str | None = None
    """The engine's current stage (``denoise``, ``encoding``…)."""
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    seconds: str
    size: str
    error: VideoError | None = None


class VideoJobList(Frozen):
    """``GET /v1/videos``."""

    object: Literal["list"] = "list"
    data: tuple[VideoJob, ...]


class DeletedVideo(Frozen):
    """The response of ``DELETE /v1/videos/{id}``."""

    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True
