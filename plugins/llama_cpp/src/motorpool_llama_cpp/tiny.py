"""Build random-weight GGUF models offline: a tiny one for tests, real-size ones for benchmarks.

A byte-level BPE tokenizer is trained with ``tokenizers`` on text written here, the
weights are random, and the file is written with the ``gguf`` package's writer, with a
ChatML chat template. Speed does not depend on the weights' values, so a random model
with a real model's dimensions benchmarks like the real one.

Needs the ``tiny`` extra: ``pip install 'motorpool-llama-cpp[tiny]'``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from motorpool.tiny import BOS_TOKEN, CHATML_TEMPLATE, EOS_TOKEN, SPECIAL_TOKENS, train_tokenizer

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class GGUFConfig:
    """Dimensions of a decoder-only transformer in GGUF terms."""

    architecture: str = "llama"
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1
    intermediate: int = 128
    vocab: int = 512
    context: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden // self.heads


TINY = GGUFConfig()
QWEN2_5_0_5B = GGUFConfig(
    architecture="qwen2",
    hidden=896,
    layers=24,
    heads=14,
    kv_heads=2,
    intermediate=4864,
    vocab=151936,
    context=32768,
    rope_theta=1000000.0,
)
"""Qwen2.5-0.5B-Instruct's dimensions (494 M parameters)."""


def build_gguf(
    path: Path,
    config: GGUFConfig = TINY,
    *,
    seed: int = 0,
    chat_template: str | None = CHATML_TEMPLATE,
) -> Path:
    """Write a random-weight GGUF with a trained tokenizer and (by default) a ChatML template."""
    import gguf  # noqa: PLC0415 - the tiny extra, imported only to build a model
    import numpy as np  # noqa: PLC0415

    tokens, merges = _vocabulary(config.vocab)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), config.architecture)
    writer.add_name(f"motorpool random {config.architecture} {config.hidden}x{config.layers}")
    writer.add_context_length(config.context)
    writer.add_embedding_length(config.hidden)
    writer.add_block_count(config.layers)
    writer.add_feed_forward_length(config.intermediate)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if token in SPECIAL_TOKENS else gguf.TokenType.NORMAL
            for token in tokens
        ]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(BOS_TOKEN))
    writer.add_eos_token_id(tokens.index(EOS_TOKEN))
    writer.add_add_bos_token(False)  # noqa: FBT003 - gguf's writer takes it positionally
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, tensor in _weights(config, rng):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _weights(
    config: GGUFConfig, rng: np.random.Generator
) -> list[tuple[str, npt.NDArray[np.float16] | npt.NDArray[np.float32]]]:
    import numpy as np  # noqa: PLC0415

    def matrix(rows: int, cols: int) -> npt.NDArray[np.float16]:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def ones(size: int) -> npt.NDArray[np.float32]:
        return np.ones(size, dtype=np.float32)

    kv_width = config.kv_heads * config.head_dim
    weights: list[tuple[str, npt.NDArray[np.float16] | npt.NDArray[np.float32]]] = [
        ("token_embd.weight", matrix(config.vocab, config.hidden))
    ]
    for layer in range(config.layers):
        block = f"blk.{layer}"
        weights += [
            (f"{block}.attn_norm.weight", ones(config.hidden)),
            (f"{block}.attn_q.weight", matrix(config.hidden, config.hidden)),
            (f"{block}.attn_k.weight", matrix(kv_width, config.hidden)),
            (f"{block}.attn_v.weight", matrix(kv_width, config.hidden)),
            (f"{block}.attn_output.weight", matrix(config.hidden, config.hidden)),
            (f"{block}.ffn_norm.weight", ones(config.hidden)),
            (f"{block}.ffn_gate.weight", matrix(config.intermediate, config.hidden)),
            (f"{block}.ffn_up.weight", matrix(config.intermediate, config.hidden)),
            (f"{block}.ffn_down.weight", matrix(config.hidden, config.intermediate)),
        ]
        if config.architecture == "qwen2":  # qwen2 has biases on q, k and v
            weights += [
                (f"{block}.attn_q.bias", np.zeros(config.hidden, dtype=np.float32)),
                (f"{block}.attn_k.bias", np.zeros(kv_width, dtype=np.float32)),
                (f"{block}.attn_v.bias", np.zeros(kv_width, dtype=np.float32)),
            ]
    weights += [
        ("output_norm.weight", ones(config.hidden)),
        ("output.weight", matrix(config.vocab, config.hidden)),
    ]
    return weights


def _vocabulary(vocab_size: int) -> tuple[list[str], list[str]]:
    """A trained byte-level BPE vocabulary (padded to ``vocab_size``) and its merges."""
    tokenizer = train_tokenizer(min(vocab_size, 512))
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [token for token, _ in by_id]
    # Real-size vocabularies are padded with unused tokens: the output layer keeps its
    # real width, which is what the speed depends on.
    tokens += [f"<|unused_{i}|>" for i in range(vocab_size - len(tokens))]
    model = json.loads(tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges
