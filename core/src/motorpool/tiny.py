"""Building blocks of tiny models, for ``motorpool_tiny_model`` hooks, tests and benchmarks.

Text engine plugins build their tiny models offline in a second or two: random weights in
the engine's own format, and a real tokenizer trained here on a few sentences with the
``tokenizers`` library (which the plugin's tiny extra installs). A ChatML chat template
goes with it, and the special tokens come first in the vocabulary (ids 0, 1, 2).

Plugins that build PyTorch models (diffusers pipelines) share the rest: a small T5
Unigram tokenizer over :data:`WORDS`, T5 encoder configurations, a seeded context in
which new modules get their weights, and a typed call of the libraries' loosely
annotated constructors. Importing this module imports neither torch nor transformers:
the functions that need them import them when called.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import T5Tokenizer

    from motorpool.torchtools import FloatDtypeName

T = TypeVar("T")
WORDS = ("a", "red", "blue", "green", "square", "circle", "cat", "dog", "on", "the", "sea")
"""Whole words of the tiny vocabularies (anything else is spelled piece by piece)."""
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Ids 0, 1 and 2 of a trained vocabulary."""
BOS_TOKEN, _, EOS_TOKEN = SPECIAL_TOKENS
VOCAB_SIZE = 512
_CORPUS = (
    "Engines wait in the motor pool until a request arrives; then one of them starts, "
    "streams its answer token by token and goes back to idle. Hello! How are you today? "
    "The weather is fine by the sea, cold in the mountains and loud in the city at night. "
    "Count with me: one, two, three, four, five, six, seven, eight, nine and ten. "
    "A small model answers quickly, a large model answers well: choose what you need. "
    "Questions, answers, stories and poems; code in Python, lists, tables and JSON. "
)


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens, trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 8, trainer=trainer)
    return tokenizer


# -- PyTorch models ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class T5Size:
    """A T5 (or UMT5) text encoder."""

    d_model: int = 32
    d_kv: int = 8
    d_ff: int = 37
    num_layers: int = 2
    num_heads: int = 4


def t5_tokenizer() -> T5Tokenizer:
    """A small Unigram tokenizer in T5's format: the words of :data:`WORDS` and printable ASCII."""
    from transformers import T5Tokenizer  # noqa: PLC0415

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [(f"\u2581{word}", -2.0) for word in WORDS]
    pieces += [(chr(code), -5.0) for code in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def t5_config(cls: type[T], size: T5Size, vocab_size: int, *, buckets: int = 8) -> T:
    """A ``cls`` (``T5Config`` or ``UMT5Config``) of ``size`` with gated-GELU feed-forwards.

    ``buckets`` is the number of relative attention buckets (T5's own is 32).
    """
    return construct(
        cls,
        vocab_size=vocab_size,
        d_model=size.d_model,
        d_kv=size.d_kv,
        d_ff=size.d_ff,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu",
    )


def construct(cls: type[T], **kwargs: object) -> T:
    """``cls(**kwargs)``: the libraries' constructors annotate their arguments loosely."""
    return cast("Callable[..., T]", cls)(**kwargs)


@contextmanager
def module_defaults(device: str, dtype: FloatDtypeName, seed: int) -> Generator[None]:
    """New modules get random weights from ``seed``, in ``dtype``, made on ``device``."""
    import torch  # noqa: PLC0415

    from motorpool.torchtools import torch_dtype  # noqa: PLC0415 - keeps this module light

    previous = torch.get_default_dtype()
    cast("Callable[[int], object]", torch.manual_seed)(seed)
    torch.set_default_dtype(torch_dtype(dtype))
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


class Saveable(Protocol):
    """What :func:`save_pretrained` needs: a diffusers pipeline or a transformers model."""

    def save_pretrained(self, save_directory: str) -> None:
        """Write the object's files into ``save_directory``."""
        ...


def save_pretrained(saveable: object, directory: Path) -> Path:
    """Save a pipeline (or model) with its ``save_pretrained`` into ``directory``; return it."""
    cast("Saveable", saveable).save_pretrained(str(directory))
    return directory
