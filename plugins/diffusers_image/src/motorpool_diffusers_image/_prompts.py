"""How many tokens of a prompt each text encoder of a pipeline takes.

Pipelines cut prompts to what their encoders take (77 tokens for CLIP, the
``max_sequence_length`` argument for T5): a longer prompt loses its end silently. The
plugin counts the tokens first and reports the cut as a warning. A tokenizer that
claims more positions than its CLIP encoder has would crash the encoder instead: it is
capped at load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from motorpool_diffusers_image import _pipelines

UNBOUNDED = 1_000_000
"""transformers' ``model_max_length`` for tokenizers without a limit is a huge number."""
_ENCODERS = ("", "_2", "_3")
"""Suffixes of the tokenizer / text encoder pairs (SD3 has three)."""


class Tokenizer(Protocol):
    """The part of a transformers tokenizer the count needs."""

    model_max_length: int

    def __call__(self, text: str, *, truncation: bool, verbose: bool) -> Mapping[str, list[int]]:
        """Token ids (``input_ids``) of ``text``."""
        ...


@dataclass(frozen=True, slots=True)
class TextLimit:
    """One text encoder and the most tokens the pipeline gives it."""

    encoder: str
    tokenizer: Tokenizer
    limit: int


@dataclass(frozen=True, slots=True)
class Truncation:
    """A prompt cut by an encoder: ``tokens`` it has, ``kept`` of them used."""

    encoder: str
    tokens: int
    kept: int


def text_limits(pipeline: DiffusionPipeline) -> list[TextLimit]:
    """Each text encoder's limit; caps a tokenizer that claims more than its encoder takes."""
    components = pipeline.components
    parameter = _pipelines.call_parameters(type(pipeline)).get("max_sequence_length")
    sequence: object = parameter.default if parameter is not None else None
    limits: list[TextLimit] = []
    for suffix in _ENCODERS:
        tokenizer: object = components.get(f"tokenizer{suffix}")
        encoder: object = components.get(f"text_encoder{suffix}")
        if tokenizer is None or encoder is None or not hasattr(tokenizer, "model_max_length"):
            continue
        typed = cast("Tokenizer", tokenizer)
        positions: object = getattr(getattr(encoder, "config", None), "max_position_embeddings", 0)
        bounds = [typed.model_max_length] if typed.model_max_length < UNBOUNDED else []
        if isinstance(positions, int) and positions > 0:
            bounds.append(positions)
            # The pipeline pads and cuts to the tokenizer's length: never past the encoder's.
            typed.model_max_length = min(typed.model_max_length, positions)
        name = type(encoder).__name__
        if not name.startswith("CLIP") and isinstance(sequence, int):
            bounds.append(sequence)  # T5 & co. get max_sequence_length tokens
        if bounds:
            limits.append(TextLimit(encoder=name, tokenizer=typed, limit=min(bounds)))
    return limits


def truncation(limits: list[TextLimit], text: str) -> Truncation | None:
    """The encoder that cuts ``text`` most, or ``None`` when every encoder takes all of it."""
    worst: Truncation | None = None
    for limit in limits:
        tokens = len(limit.tokenizer(text, truncation=False, verbose=False)["input_ids"])
        if tokens > limit.limit and (worst is None or limit.limit < worst.kept):
            worst = Truncation(encoder=limit.encoder, tokens=tokens, kept=limit.limit)
    return worst
