"""The base every wire type shares: frozen, strict about unknown fields, finite floats."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""A random seed: any non-negative 63-bit integer."""


class Frozen(BaseModel):
    """Immutable, rejects unknown fields and NaN/inf, bytes travel as base64 in JSON.

    ``defer_build`` keeps ``import motorpool`` cheap: a schema is built on first use.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        defer_build=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )


class Capability(StrEnum):
    """What an engine can do. A plugin declares a set in its probe report."""

    COMPLETION = "completion"
    CHAT = "chat"
    IMAGE = "image"
    IMAGE_TO_IMAGE = "image_to_image"
    VIDEO = "video"
    IMAGE_TO_VIDEO = "image_to_video"
    WORLD = "world"


class Usage(Frozen):
    """Token accounting of one text generation."""

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


class Timings(Frozen):
    """Where the time of one generation went, in seconds."""

    total_s: float = Field(ge=0)
    first_output_s: float | None = Field(default=None, ge=0)
    """Time to the first token / frame / step, when the engine streams."""
    prompt_tokens_per_s: float | None = Field(default=None, ge=0)
    output_tokens_per_s: float | None = Field(default=None, ge=0)
    peak_memory_bytes: int | None = Field(default=None, ge=0)


class ErrorInfo(Frozen):
    """A typed error as it crosses a boundary: stable code, a human message, a fix."""

    code: str
    message: str
    hint: str | None = None
