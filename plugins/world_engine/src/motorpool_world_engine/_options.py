"""Load options of a world model."""

from __future__ import annotations

from motorpool.torchtools import DeviceName, DtypeName
from pydantic import BaseModel, ConfigDict, Field, JsonValue


def quant_min_capability(quant: str) -> tuple[int, int]:
    """The CUDA compute capability a world_engine quantisation needs, by its name.

    world_engine 1.0 calls them ``w8a8``, ``fp8`` and ``nvfp4``; 1.5 ``intw8a8``,
    ``fp8w8a8`` and ``nvfp4``: int8 from Ampere (8.0) on, fp8 from Ada (8.9) on, nvfp4 on
    Blackwell (10.0).
    """
    if "fp4" in quant:
        return (10, 0)
    if "fp8" in quant:
        return (8, 9)
    return (8, 0)


class WorldEngineOptions(BaseModel):
    """``options`` of a world model's spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: DeviceName = "auto"
    """``auto`` picks CUDA, then MPS, then the CPU (world_engine itself is built for CUDA)."""
    dtype: DtypeName = "auto"
    """``auto``: bfloat16 on CUDA GPUs that support it, float16 on older ones and MPS,
    float32 on the CPU."""
    quant: str | None = Field(default=None, min_length=1)
    """world_engine's weight quantisation (CUDA only), one of its ``QUANTS``: int8
    (``intw8a8``) from Ampere on, fp8 (``fp8w8a8``) from Ada/Hopper on, ``nvfp4`` on
    Blackwell."""
    config_overrides: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Values merged over the model's ``config.yaml`` (world_engine's
    ``model_config_overrides``)."""
