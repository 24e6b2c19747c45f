"""Building blocks of tiny text models, for ``motorpool_tiny_model`` hooks and tests.

Text engine plugins build their tiny models offline in a second or two: random weights in
the engine's own format, and a real tokenizer trained here on a few sentences with the
``tokenizers`` library (which the plugin's tiny extra installs). A ChatML chat template
goes with it, and the special tokens come first in the vocabulary (ids 0, 1, 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

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
