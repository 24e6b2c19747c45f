"""Video generation: text-to-video and image-to-video."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from motorpool.types._base import Frozen, Seed, Timings
from motorpool.types.image import Guidance, Side, Steps

# The bounds of each request field, shared with the server's request body.
FrameCount = Annotated[int, Field(ge=1, le=2049)]
Fps = Annotated[int, Field(ge=1, le=240)]


class VideoRequest(Frozen):
    """Generate one clip."""

    kind: Literal["video"] = "video"
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    frames: FrameCount | None = None
    width: Side | None = None
    height: Side | None = None
    fps: Fps | None = None
    steps: Steps | None = None
    guidance: Guidance | None = None
    seed: Seed | None = None
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
