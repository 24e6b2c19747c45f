"""Typed views of the few mlx and mlx-lm functions and objects whose annotations are incomplete.

mlx ships type stubs, but some functions take or return untyped values (``mx.eval(*args)``,
``tree_flatten``, ``nn.quantize``'s predicate, ``stream_generate(**kwargs)``) and mlx-lm's
``TokenizerWrapper`` forwards to transformers untyped. Each is given its precise signature
here, once, so the rest of the plugin type-checks strictly.
Importing this module imports mlx and mlx-lm: only the load path and the tiny model
builder do.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Protocol, cast

import mlx.core as mx
import mlx.utils
import mlx_lm
from mlx import nn
from mlx_lm.generate import GenerationResponse

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]
QuantizePredicate = Callable[[str, nn.Module], "bool | dict[str, object]"]


class Tokenizer(Protocol):
    """The part of mlx-lm's ``TokenizerWrapper`` the plugin uses, typed."""

    bos_token: str | None
    has_chat_template: bool

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """Token ids of ``text``."""
        ...

    def apply_chat_template(
        self,
        conversation: list[dict[str, str]],
        *,
        add_generation_prompt: bool,
        tokenize: bool,
        **kwargs: object,
    ) -> list[int]:
        """Token ids of the conversation rendered by the chat template."""
        ...

    def __len__(self) -> int:
        """Tokens in the vocabulary."""
        ...


class _StreamGenerate(Protocol):
    def __call__(
        self,
        model: nn.Module,
        tokenizer: object,
        prompt: mx.array,
        *,
        max_tokens: int,
        sampler: Sampler,
        logits_processors: list[LogitsProcessor],
        max_kv_size: int | None,
    ) -> Generator[GenerationResponse, None, None]: ...


class _Quantize(Protocol):
    def __call__(
        self,
        model: nn.Module,
        group_size: int,
        bits: int,
        *,
        class_predicate: QuantizePredicate,
    ) -> None: ...


stream_generate = cast("_StreamGenerate", mlx_lm.stream_generate)
"""``mlx_lm.stream_generate`` with the keyword arguments the plugin passes."""

quantize = cast("_Quantize", nn.quantize)
"""``mlx.nn.quantize``: quantise the layers ``class_predicate`` picks, in place."""

evaluate = cast("Callable[[object], None]", mx.eval)
"""``mx.eval``: compute (materialise) every array in a tree."""

save_safetensors = cast(
    "Callable[[str, Mapping[str, mx.array], Mapping[str, str]], None]", mx.save_safetensors
)
"""``mx.save_safetensors(path, arrays, metadata)``."""

_parameter_tree = cast("Callable[[nn.Module], object]", nn.Module.parameters)
"""``module.parameters()``: nested dicts and lists of arrays."""
_tree_flatten = cast("Callable[[object], list[tuple[str, mx.array]]]", mlx.utils.tree_flatten)


def parameters(module: nn.Module) -> list[tuple[str, mx.array]]:
    """Every parameter of ``module`` with its dotted name (``model.layers.0.mlp...``)."""
    return _tree_flatten(_parameter_tree(module))


def materialise(module: nn.Module) -> None:
    """Compute every parameter of ``module`` now (mlx is lazy)."""
    evaluate(_parameter_tree(module))
