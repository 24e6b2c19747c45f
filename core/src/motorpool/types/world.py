"""Interactive world models: a seed frame and control input in, frame batches out."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from motorpool.types._base import Frozen

MIN_KEY_CODE = 1
MAX_KEY_CODE = 254
"""Windows virtual-key codes run from 1 to 254."""


class SessionConfig(Frozen):
    """How an interactive session runs."""

    fps_cap: float | None = Field(default=None, ge=0.1, le=1000)
    """Pace frame batches to at most this many frames per second; ``None`` = as fast as possible."""
    realtime: bool = False
    """Pace to the model's own frame rate (:attr:`SessionInfo.fps`) when no ``fps_cap`` is set."""
    prompt: str | None = None
    """Initial text conditioning, for models that accept it."""
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    auto_reset: bool = True
    """Reset before the model's context is exhausted instead of failing."""
    record_path: str | None = Field(default=None, min_length=1)
    """Also write every generated frame to this MP4 file (the server takes a bare file name
    and writes it in its recordings folder)."""


class SessionInfo(Frozen):
    """What an open session produces, as its engine reports it."""

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    frames_per_step: int = Field(default=1, gt=0)
    """Frames in each batch (4 for models that make sub-frames in one pass)."""
    fps: float | None = Field(default=None, gt=0)
    """The model's own frame rate: what ``realtime`` paces to."""
    max_frames: int | None = Field(default=None, gt=0)
    """Frames the model's context holds from one reset; ``None`` = no limit."""
    prompt_conditioning: bool = False
    """Whether :meth:`Session.prompt` steers the model."""


class SeedFrame(Frozen):
    """The image a session starts from."""

    image: bytes = Field(min_length=1)
    media_type: Literal["image/png", "image/jpeg"] = "image/png"

    @classmethod
    def of(cls, image: bytes) -> SeedFrame:
        """A seed from PNG or JPEG bytes, the media type read from the bytes themselves."""
        jpeg = image.startswith(b"\xff\xd8\xff")
        return cls(image=image, media_type="image/jpeg" if jpeg else "image/png")


class ControlInput(Frozen):
    """Controller state for the next frame(s). Buttons are Windows virtual-key codes."""

    buttons: frozenset[Annotated[int, Field(ge=MIN_KEY_CODE, le=MAX_KEY_CODE)]] = frozenset()
    """Held keys and mouse buttons: A-Z are 65-90, digits 48-57, arrows 37-40, shift 16,
    ctrl 17, space 32, mouse buttons 1, 2 and 4."""
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
    reset: Literal["requested", "auto"] | None = None
    """Set on the first batch after a reset: asked for, or made because the model's
    context was about to run out (``auto_reset``)."""

    def after_dropping(self, dropped: FrameBatch) -> FrameBatch:
        """This batch, in place of an older one dropped unseen (a slow consumer).

        It takes over what the dropped batch was the first to report, so a consumer never
        misses a reset or the echo of its control: a batch made after a control shows it.
        """
        marks: dict[str, object] = {}
        if self.reset is None and dropped.reset is not None:
            marks["reset"] = dropped.reset
        if self.client_ts is None and dropped.client_ts is not None:
            marks["client_ts"] = dropped.client_ts
        return self.model_copy(update=marks) if marks else self
