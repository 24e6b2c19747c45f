"""Image generation: text-to-image and image-to-image."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from motorpool.types._base import Frozen, Seed, Timings

MAX_IMAGE_SIDE = 8192
MAX_STEPS = 500

# The bounds of each request field, shared with video and the server's request bodies.
Side = Annotated[int, Field(ge=8, le=MAX_IMAGE_SIDE)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Guidance = Annotated[float, Field(ge=0, le=100)]


class ImageRequest(Frozen):
    """Generate ``count`` images from a prompt (and optionally an input image)."""

    kind: Literal["image"] = "image"
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    width: Side | None = None
    height: Side | None = None
    """``None`` takes the model's native size."""
    steps: Steps | None = None
    guidance: Guidance | None = None
    seed: Seed | None = None
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
