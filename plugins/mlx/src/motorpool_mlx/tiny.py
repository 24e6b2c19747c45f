"""Build random-weight Llama models in Hugging Face format, offline, for tests and benchmarks.

The folder holds what ``mlx_lm.load`` reads from a real checkpoint: ``config.json``,
``model.safetensors`` (random weights from mlx's own Llama module, so the tensor names
are exactly the ones mlx-lm loads), and the byte-level BPE tokenizer that
``motorpool.tiny`` trains with ``tokenizers`` (``tokenizer.json`` and
``tokenizer_config.json`` with its ChatML chat template). Nothing is downloaded. Speed
does not depend on the weights' values, so a random model with a real model's dimensions
benchmarks like the real one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from motorpool.tiny import BOS_TOKEN, CHATML_TEMPLATE, EOS_TOKEN, train_tokenizer

Dtype = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """Dimensions of a Llama decoder, as ``config.json`` spells them."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False


TINY = LlamaConfig()
"""About 0.1 M parameters: builds in well under a second, generates in milliseconds."""
MID = LlamaConfig(
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=1024,
    max_position_embeddings=2048,
)
"""About 10 M parameters: slow enough per token that the engine, not the host, dominates."""


def build_model(
    directory: Path, config: LlamaConfig = TINY, *, dtype: Dtype = "float32", seed: int = 0
) -> Path:
    """Write a random-weight Llama model folder into ``directory`` and return it."""
    import mlx.core as mx  # noqa: PLC0415 - the engine, imported only to build a model
    from mlx_lm.models import llama  # noqa: PLC0415

    from motorpool_mlx import _mlx  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    vocab_size = tokenizer.get_vocab_size()
    mx.random.seed(seed)
    model = llama.Model(
        llama.ModelArgs(model_type="llama", vocab_size=vocab_size, **asdict(config))
    )
    element = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}[dtype]
    weights = {name: value.astype(element) for name, value in _mlx.parameters(model)}
    _mlx.save_safetensors(str(directory / "model.safetensors"), weights, {"format": "mlx"})
    settings = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        **asdict(config),
        "bos_token_id": tokenizer.token_to_id(BOS_TOKEN),
        "eos_token_id": tokenizer.token_to_id(EOS_TOKEN),
        "torch_dtype": dtype,
    }
    (directory / "config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": BOS_TOKEN,
        "model_max_length": config.max_position_embeddings,
        "chat_template": CHATML_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2), encoding="utf-8"
    )
    return directory
