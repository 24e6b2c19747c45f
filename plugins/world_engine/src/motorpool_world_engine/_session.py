"""One interactive session on a loaded world model."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

from motorpool.engine import Context, PendingBatch
from motorpool.errors import StorageFailed, UnsupportedCapability
from motorpool.types import ControlInput, FrameBatch, SessionConfig, SessionInfo

from motorpool_world_engine._adapter import WorldAdapter
from motorpool_world_engine._recorder import Recorder

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class WorldSession:
    """A seed frame, then one pass of the model per step; JPEG encoding is left to the host.

    ``step`` returns a :class:`~motorpool.engine.PendingBatch`: the host encodes the frames
    on another thread while the model makes the next ones.
    """

    def __init__(
        self,
        adapter: WorldAdapter,
        config: SessionConfig,
        seed: NDArray[np.uint8],
        context: Context,
    ) -> None:
        shape = adapter.frame_shape
        assert shape is not None
        passes, height, width = shape
        self._adapter = adapter
        self._config = config
        self._seed = seed
        self._log = context.log
        self._frame_id = 0
        self.info = SessionInfo(
            width=width,
            height=height,
            frames_per_step=passes,
            fps=adapter.inference_fps,
            # The seed takes one pass of the context.
            max_frames=(adapter.n_frames - 1) * passes if adapter.n_frames else None,
            prompt_conditioning=adapter.prompt_conditioning,
        )
        adapter.start(seed)
        if config.prompt is not None:
            self.set_prompt(config.prompt)
        # Last: a session refused above must not leave ffmpeg and its writer thread running.
        self._recorder: Recorder | None = None
        if config.record_path is not None:
            try:
                self._recorder = Recorder(
                    Path(config.record_path), (width, height), adapter.inference_fps or 30.0
                )
            except OSError as exc:
                raise StorageFailed(f"cannot record to {config.record_path}: {exc}") from exc

    def step(self, control: ControlInput) -> PendingBatch:
        """One pass of the model; the frames are encoded when the host asks."""
        started = time.perf_counter()
        frames = self._adapter.generate(control)
        generation_ms = (time.perf_counter() - started) * 1000
        if self._recorder is not None:
            self._recorder.put(frames)
        frame_id, self._frame_id = self._frame_id, self._frame_id + 1
        quality = self._config.jpeg_quality

        def encode() -> FrameBatch:
            return FrameBatch(
                frame_id=frame_id,
                frames=tuple(jpeg(frame, quality) for frame in frames),
                media_type="image/jpeg",
                width=self.info.width,
                height=self.info.height,
                generation_ms=generation_ms,
                client_ts=control.client_ts,
            )

        return PendingBatch(encode)

    def reset(self) -> None:
        """Back to the seed frame with an empty context."""
        self._adapter.start(self._seed)
        self._frame_id = 0

    def set_prompt(self, prompt: str) -> None:
        """Text conditioning, for models that have it."""
        if not self._adapter.prompt_conditioning:
            raise UnsupportedCapability(
                f"this model ({self._adapter.model_type}) has no prompt conditioning",
                hint="leave the prompt out, or load a model with prompt_conditioning",
            )
        self._adapter.set_prompt(prompt)

    def close(self) -> None:
        """Finish the recording; the model stays loaded for the next session."""
        if self._recorder is not None:
            self._recorder.close()
            if self._recorder.error is not None:
                self._log.warning(
                    "the session's recording was not kept",
                    path=self._config.record_path,
                    error=self._recorder.error,
                )


def jpeg(frame: NDArray[np.uint8], quality: int) -> bytes:
    """One ``[H, W, 3]`` frame as JPEG (Pillow's libjpeg-turbo releases the GIL)."""
    from PIL import Image  # noqa: PLC0415 - loaded with the model

    out = io.BytesIO()
    Image.fromarray(frame, "RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()
