"""Interactive world models: a seed frame and control input in, frame batches out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from motorpool.types._base import Frozen


class SessionConfig(Frozen):
    """How an interactive session runs."""

    fps_cap: float | None = Field(default=None, gt=0, le=1000)
    """Pace frame batches to at most this many frames per second; ``None`` = as fast as possible."""
    prompt: str | None = None
    """Initial text conditioning, for models that accept it."""
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    auto_reset: bool = True
    """Reset before the model's context is exhausted instead of failing."""


class SeedFrame(Frozen):
    """The image a session starts from."""

    image: bytes = Field(min_length=1)
    media_type: Literal["image/png", "image/jpeg"] = "image/png"


class ControlInput(Frozen):
    """Controller state for the next frame(s). Buttons are Windows virtual-key codes."""

    buttons: frozenset[int] = frozenset()
    mouse_dx: float = 0.0
    mouse_dy: float = 0.0
    scroll: int = Field(default=0, ge=-1, le=1)
    client_ts: float | None = None
    """Echoed back on the batch generated from this input, to measure latency."""

    def merged_with(self, newer: ControlInput) -> ControlInput:
        """Combine a stale input with a newer one: newest state wins, mouse motion adds up."""
        return ControlInput(
            buttons=newer.buttons,
            mouse_dx=self.mouse_dx + newer.mouse_dx,
            mouse_dy=self.mouse_dy + newer.mouse_dy,
            scroll=newer.scroll or self.scroll,
            client_ts=newer.client_ts,
        )


class FrameBatch(Frozen):
    """One pass of the model: one frame, or several sub-frames."""

    frame_id: int = Field(ge=0)
    frames: tuple[bytes, ...] = Field(min_length=1)
    media_type: Literal["image/jpeg", "image/png"] = "image/jpeg"
    width: int
    height: int
    generation_ms: float = Field(ge=0)
    client_ts: float | None = None
