"""Video generation: text-to-video and image-to-video."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from motorpool.types._base import Frozen, Timings
from motorpool.types.image import MAX_IMAGE_SIDE, MAX_STEPS


class VideoRequest(Frozen):
    """Generate one clip."""

    kind: Literal["video"] = "video"
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    frames: int | None = Field(default=None, ge=1, le=2049)
    width: int | None = Field(default=None, ge=8, le=MAX_IMAGE_SIDE)
    height: int | None = Field(default=None, ge=8, le=MAX_IMAGE_SIDE)
    fps: int | None = Field(default=None, ge=1, le=240)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    init_image: bytes | None = None
    """First frame (PNG or JPEG) for image-to-video."""
    return_frames: bool = False
    """Also return every frame as PNG."""


class VideoResult(Frozen):
    """An encoded clip."""

    kind: Literal["video"] = "video"
    video: bytes
    media_type: str = "video/mp4"
    frames: int = Field(ge=1)
    width: int
    height: int
    fps: int
    seed: int | None = None
    frame_images: tuple[bytes, ...] = ()
    timings: Timings
