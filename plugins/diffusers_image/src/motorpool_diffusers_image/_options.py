"""Load options of a diffusers pipeline, as users write them in a models file or a spec."""

from __future__ import annotations

from motorpool.torchtools import TorchOptions
from pydantic import Field


class DiffusersImageOptions(TorchOptions):
    """How to load a text-to-image pipeline. Every field is optional.

    ``device``, ``dtype``, ``cpu_offload``, ``vae_slicing`` and ``vae_tiling`` come from
    :class:`motorpool.torchtools.TorchOptions`, shared with the video plugin.
    """

    attention_slicing: bool = False
    """Compute attention in slices (``enable_attention_slicing``): less memory, slower."""
    scheduler: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9]*Scheduler$")
    """A diffusers scheduler class replacing the pipeline's own, built from its config
    (for example ``DPMSolverMultistepScheduler``); it must be one the pipeline accepts."""
    variant: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]+$")
    """Load the weight files of this variant (``fp16`` loads ``*.fp16.safetensors``)."""
    png_compress_level: int = Field(default=1, ge=0, le=9)
    """zlib level of the PNG files: 1 encodes several times faster than 6 (Pillow's default)
    for files about a tenth larger; 9 is the smallest and slowest."""
    local_files_only: bool = True
    """Never let diffusers or transformers reach the network while loading (the host has
    already downloaded a hub source); ``false`` lets them fetch what the folder lacks."""
