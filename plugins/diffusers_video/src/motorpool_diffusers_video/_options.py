"""Load options of a diffusers video pipeline, as users write them in a models file or a spec."""

from __future__ import annotations

from typing import Literal

from motorpool.torchtools import TorchOptions
from pydantic import Field

Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
]


class DiffusersVideoOptions(TorchOptions):
    """How to load a video pipeline and encode its clips. Every field is optional.

    ``device``, ``dtype``, ``cpu_offload``, ``vae_slicing`` and ``vae_tiling`` come from
    :class:`motorpool.torchtools.TorchOptions`, shared with the image plugin.
    """

    default_fps: int | None = Field(default=None, ge=1, le=240)
    """Frames per second of a clip when the request names none (default: the rate the
    family was trained at: Wan 16, LTX-Video 25, CogVideoX 8)."""
    crf: int = Field(default=18, ge=0, le=51)
    """H.264 constant rate factor: 0 is lossless, 18 looks lossless, 23 is x264's default."""
    preset: Preset = "veryfast"
    """x264 speed preset: faster presets encode sooner into larger files."""
    scratch_dir: str | None = None
    """Folder where the MP4 is written before it is read back (default: the system's
    temporary folder); a clip is renamed into place only once ffmpeg has finished it."""
    local_files_only: bool = True
    """Never let diffusers or transformers reach the network while loading (the host has
    already downloaded a hub source); ``false`` lets them fetch what the folder lacks."""
