"""The plugin's README stays true: its options table is the options model, field by field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from motorpool_mlx import _probe
from motorpool_mlx._options import GroupSize, MlxOptions, QuantizeBits

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_option_is_in_the_table_and_nothing_else() -> None:
    table = set(re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.MULTILINE))
    assert table == set(MlxOptions.model_fields)


def listed(values: tuple[int, ...]) -> str:
    """``(2, 3, 4)`` as the README writes it: ``2, 3 or 4``."""
    return ", ".join(map(str, values[:-1])) + f" or {values[-1]}"


def test_the_listed_values_and_install_commands_are_the_real_ones() -> None:
    assert f"{listed(get_args(QuantizeBits))} bits" in README
    assert f": {listed(get_args(GroupSize))} |" in README
    assert f"`{_probe.LINUX_INSTALL}`" in README
    assert f"`{_probe.MACOS_INSTALL}`" in README
