"""Image generation: text-to-image and image-to-image."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from motorpool.types._base import Frozen, Timings

MAX_IMAGE_SIDE = 8192
MAX_STEPS = 500


class ImageRequest(Frozen):
    """Generate ``count`` images from a prompt (and optionally an input image)."""

    kind: Literal["image"] = "image"
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    width: int | None = Field(default=None, ge=8, le=MAX_IMAGE_SIDE)
    height: int | None = Field(default=None, ge=8, le=MAX_IMAGE_SIDE)
    """``None`` takes the model's native size."""
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    count: int = Field(default=1, ge=1, le=16)
    init_image: bytes | None = None
    """PNG or JPEG bytes for image-to-image."""
    strength: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _strength_needs_image(self) -> ImageRequest:
        if self.strength is not None and self.init_image is None:
            raise ValueError("strength applies to image-to-image: give init_image too")
        return self


class GeneratedImage(Frozen):
    """One PNG image with the seed that made it."""

    png: bytes
    width: int
    height: int
    seed: int | None = None


class ImageResult(Frozen):
    """The images of one request, in order."""

    kind: Literal["image"] = "image"
    images: tuple[GeneratedImage, ...] = Field(min_length=1)
    steps: int | None = None
    timings: Timings
