"""The plugin's README stays true: its options table is the options model, field by field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from motorpool import torchtools
from motorpool_diffusers_image import _probe
from motorpool_diffusers_image._options import DiffusersImageOptions

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
ROWS = dict(re.findall(r"^\| `([a-z_0-9]+)` \| ([^|]+) \|", README, flags=re.MULTILINE))


def test_every_option_is_in_the_table_and_nothing_else() -> None:
    assert set(ROWS) == set(DiffusersImageOptions.model_fields)


@pytest.mark.parametrize("name", sorted(DiffusersImageOptions.model_fields))
def test_each_default_is_the_real_one(name: str) -> None:
    default = DiffusersImageOptions.model_fields[name].default
    written = ROWS[name].strip()
    if default is None:
        assert not written.startswith("`")  # described in words ("none", "the pipeline's own")
    elif isinstance(default, bool):
        assert written == f"`{str(default).lower()}`"
    elif isinstance(default, int):
        assert written == str(default)
    else:
        assert written == f"`{default}`"


def test_the_install_commands_are_the_real_ones() -> None:
    for command in (
        torchtools.TORCH_CUDA,
        torchtools.TORCH_CPU,
        torchtools.TORCH_ROCM,
        torchtools.TORCH_WINDOWS_CUDA,
        _probe.LIBRARIES_INSTALL,
    ):
        assert f"`{command}`" in README
