"""Build random-weight Llama models in Hugging Face format, offline, for tests and benchmarks.

The folder holds what ``mlx_lm.load`` reads from a real checkpoint: ``config.json``,
``model.safetensors`` (random weights from mlx's own Llama module, so the tensor names
are exactly the ones mlx-lm loads), and a byte-level BPE tokenizer trained here with
``tokenizers`` (``tokenizer.json`` + ``tokenizer_config.json`` with a ChatML chat
template). Nothing is downloaded. Speed does not depend on the weights' values, so a
random model with a real model's dimensions benchmarks like the real one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_TOKEN = "<|im_end|>"  # noqa: S105 - a token of the vocabulary, not a secret
VOCAB_SIZE = 512
_CORPUS = (
    "Engines wait in the motor pool until a request arrives; then one of them starts, "
    "streams its answer token by token and goes back to idle. Hello! How are you today? "
    "The weather is fine by the sea, cold in the mountains and loud in the city at night. "
    "Count with me: one, two, three, four, five, six, seven, eight, nine and ten. "
    "Apple silicon computes with Metal; Linux machines use the CPU build of MLX. "
    "A small model answers quickly, a large model answers well: choose what you need. "
    "Questions, answers, stories and poems; code in Python, lists, tables and JSON. "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday, January to December. "
)

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
    tokenizer = _train_tokenizer()
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
        "bos_token_id": tokenizer.token_to_id(SPECIAL_TOKENS[0]),
        "eos_token_id": tokenizer.token_to_id(EOS_TOKEN),
        "torch_dtype": dtype,
    }
    (directory / "config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": SPECIAL_TOKENS[0],
        "model_max_length": config.max_position_embeddings,
        "chat_template": CHATML_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2), encoding="utf-8"
    )
    return directory


def _train_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer of :data:`VOCAB_SIZE` tokens, trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 8, trainer=trainer)
    return tokenizer
