"""Recording a session to MP4 on a writer thread that never holds generation up.

Frames go into a bounded queue; a writer thread pipes them to ffmpeg (imageio-ffmpeg's
binary, H.264). When the encoder falls behind and the queue is full, new frames are
dropped and counted instead of making the generating thread wait — Biome's lesson: an
encoder's back-pressure must never stall the model. ffmpeg writes ``NAME.partial.mp4``;
only a recording ffmpeg finished is renamed to its final name.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import imageio_ffmpeg
import structlog

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

log = structlog.get_logger(__name__)

QUEUE_FRAMES = 64
"""Frames waiting for the encoder before new ones are dropped (64 at 640x360: 44 MB)."""
CLOSE_WAIT_S = 30.0


class Recorder:
    """An MP4 file being written from frames handed over on any one thread."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float) -> None:
        self.path = path
        self.partial = path.with_name(f"{path.stem}.partial{path.suffix}")
        self.dropped = 0
        self.written = 0
        self.error: str | None = None
        self._queue: queue.Queue[NDArray[np.uint8] | None] = queue.Queue(QUEUE_FRAMES)
        width, height = size
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-r", f"{fps:g}", "-i", "-",
            "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",  # 4:2:0 needs even sides
            "-movflags", "+faststart", str(self.partial),
        ]  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ffmpeg = subprocess.Popen(  # noqa: S603 - a fixed ffmpeg command line
            command, stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._thread = threading.Thread(target=self._write, name="world-recorder", daemon=True)
        self._thread.start()

    def put(self, frames: NDArray[np.uint8]) -> None:
        """Queue ``[T, H, W, 3]`` frames; those the queue has no room for are dropped."""
        for frame in frames:
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                self.dropped += 1

    def close(self) -> None:
        """Finish the file: what is queued is written, then ffmpeg ends; errors are logged.

        Bounded: an ffmpeg that stops taking frames (a hung disk) is killed after
        ``CLOSE_WAIT_S`` and the recording is not kept, so closing a session never hangs.
        """
        if not self._put_end():
            self._kill(f"ffmpeg took no frames for {CLOSE_WAIT_S:g} s")
            self._put_end()
        self._thread.join(CLOSE_WAIT_S)
        if self._thread.is_alive():
            self._kill(f"ffmpeg did not finish the frames in {CLOSE_WAIT_S:g} s")
            self._thread.join(CLOSE_WAIT_S)
        stdin = self._ffmpeg.stdin
        if stdin is not None and not self._thread.is_alive():
            with contextlib.suppress(OSError):  # ffmpeg already gone: its error is kept
                stdin.close()
        try:
            code = self._ffmpeg.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self._kill(f"ffmpeg did not end in {CLOSE_WAIT_S:g} s")
            code = self._ffmpeg.wait()
        stderr = self._ffmpeg.stderr.read().decode(errors="replace") if self._ffmpeg.stderr else ""
        if code == 0 and self.error is None and self.written:
            try:
                self.partial.replace(self.path)
            except OSError as exc:
                self.error = f"could not keep the recording: {exc}"
            else:
                log.info("recording written", path=str(self.path), frames=self.written,
                         dropped=self.dropped)  # fmt: skip
                return
        self.partial.unlink(missing_ok=True)
        if code == 0 and self.error is None:  # closed before its first frame: not a failure
            self.error = "the session made no frames"
            log.info("nothing recorded", path=str(self.path))
            return
        self.error = self.error or stderr.strip() or f"ffmpeg exit status {code}"
        log.error("recording failed", path=str(self.path), error=self.error)

    def _put_end(self) -> bool:
        """Tell the writer to finish after the queued frames; ``False`` if it takes none."""
        try:
            self._queue.put(None, timeout=CLOSE_WAIT_S)
        except queue.Full:
            return False
        return True

    def _kill(self, why: str) -> None:
        """Stop ffmpeg at once: the writer's next write fails and it drains the queue."""
        self.error = self.error or why
        self._ffmpeg.kill()

    def _write(self) -> None:
        stdin = self._ffmpeg.stdin
        assert stdin is not None
        while (frame := self._queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the producer never blocks on a dead encoder
            try:
                stdin.write(frame.tobytes())
                self.written += 1
            except (OSError, ValueError) as exc:  # ffmpeg died or was killed: keep draining
                self.error = self.error or f"ffmpeg stopped taking frames: {exc}"
