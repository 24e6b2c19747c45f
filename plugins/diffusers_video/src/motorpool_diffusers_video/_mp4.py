"""MP4 (H.264) encoding with the ffmpeg binary that imageio-ffmpeg ships.

ffmpeg reads raw RGB frames on its standard input and writes a ``*.partial.mp4`` file
next to where the clip will be; only a clip ffmpeg finished (exit status 0) is renamed
to its final name and read back, so no half-written file is ever taken for a result.
A write that fails for want of space or rights raises ``StorageFailed``.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
from motorpool.errors import EngineFailed, StorageFailed

MEDIA_TYPE = "video/mp4"
_STORAGE_WORDS = ("No space left", "File too large", "Permission denied", "Read-only")
"""What ffmpeg prints when the file, not the encoder, is the problem."""


@dataclass(frozen=True, slots=True)
class Encoding:
    """How to encode: x264's constant rate factor and speed preset, and where to write."""

    crf: int = 18
    preset: str = "veryfast"
    scratch_dir: Path | None = None


def encode_mp4(
    frames: Sequence[bytes],
    size: tuple[int, int],
    fps: int,
    encoding: Encoding,
    metadata: Mapping[str, str],
) -> bytes:
    """An MP4 of ``frames`` (each ``width * height * 3`` RGB bytes) at ``fps``.

    ``metadata`` goes into the container (``comment``, ``title``... as ffmpeg names them).
    Even sides are required by H.264's 4:2:0 chroma; the plugin's sizes always are.
    """
    width, height = size
    folder = encoding.scratch_dir or Path(tempfile.gettempdir())
    name = f"motorpool-{uuid.uuid4().hex}"
    partial, final = folder / f"{name}.partial.mp4", folder / f"{name}.mp4"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "-",
        "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-crf", str(encoding.crf), "-preset", encoding.preset,
        "-movflags", "+faststart",  # the index first: players start before the last byte
    ]  # fmt: skip
    for key, value in metadata.items():
        command += ["-metadata", f"{key}={value}"]
    command.append(str(partial))
    try:
        if not folder.is_dir():
            raise StorageFailed(
                f"the MP4 cannot be written: {folder} is not a folder",
                hint="set scratch_dir to an existing, writable folder",
            )
        try:
            done = subprocess.run(  # noqa: S603 - a fixed ffmpeg command line, no shell
                command, input=b"".join(frames), capture_output=True, check=False
            )
        except OSError as exc:
            raise EngineFailed(f"could not run ffmpeg: {exc}") from exc
        if done.returncode != 0:
            raise _failure(done.returncode, done.stderr.decode(errors="replace"), folder)
        try:
            partial.replace(final)
            return final.read_bytes()
        except OSError as exc:
            raise StorageFailed(f"could not keep the MP4 in {folder}: {exc}") from exc
    finally:
        for path in (partial, final):
            path.unlink(missing_ok=True)


def _failure(code: int, stderr: str, folder: Path) -> StorageFailed | EngineFailed:
    """The typed error for an ffmpeg run that failed."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
    if code == -signal.SIGXFSZ or any(word in stderr for word in _STORAGE_WORDS):
        why = "the file grew past the size limit" if code == -signal.SIGXFSZ else last
        return StorageFailed(
            f"the MP4 could not be written to {folder}: {why}",
            hint="free disk space, or set scratch_dir to a folder on a disk with room",
        )
    return EngineFailed(f"ffmpeg could not encode the clip: {last}")
