"""The plugin's README stays true: its options table is the options model, field by field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from motorpool_llama_cpp._options import CHAT_FORMATTERS, ChatFormat, KvCacheType, LlamaOptions

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_option_is_in_the_table_and_nothing_else() -> None:
    table = set(re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.MULTILINE))
    assert table == set(LlamaOptions.model_fields)


def test_the_listed_chat_formats_and_kv_types_are_the_accepted_ones() -> None:
    assert set(get_args(ChatFormat)) == set(CHAT_FORMATTERS)
    for name in (*get_args(ChatFormat), *get_args(KvCacheType)):
        assert f"`{name}`" in README
