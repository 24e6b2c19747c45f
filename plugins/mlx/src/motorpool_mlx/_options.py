"""Load options of an MLX model, as users write them in a models file or a spec."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CONTEXT = 4096
"""Tokens of KV cache the memory estimate counts when ``max_kv_size`` is not set
(capped at the model's own context)."""

QuantizeBits = Literal[2, 3, 4, 5, 6, 8]
GroupSize = Literal[32, 64, 128]


class MlxOptions(BaseModel):
    """How to load an MLX model folder. Every field is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantize_bits: QuantizeBits | None = None
    """Quantise the weights to this many bits while loading (mlx's affine quantisation,
    as ``mlx_lm.convert -q`` does); for models saved in full or half precision."""
    quantize_group_size: GroupSize = 64
    """Weights sharing one scale and bias when ``quantize_bits`` is set."""
    max_kv_size: int | None = Field(default=None, ge=16)
    """Cap the KV cache at this many tokens (a rotating cache that keeps the first few
    tokens and the most recent ones): bounded memory for long generations."""
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    """Seed of requests that bring none; default: a fresh random seed per request."""
    chat_template: str | None = Field(default=None, min_length=1)
    """A Jinja chat template replacing the tokenizer's own."""
    trust_remote_code: bool = False
    """Allow a model whose config names Python code of its own (``model_file``) and a
    tokenizer with custom code to run it. Only for models you trust."""
