"""The plugin's README stays true: its options table is the options model, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
from motorpool_diffusers_image import _probe
from motorpool_diffusers_image._options import DiffusersImageOptions

from tests.support import TORCH_INSTALL_COMMANDS, assert_default_written, options_table

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
ROWS = options_table(README)


def test_every_option_is_in_the_table_and_nothing_else() -> None:
    assert set(ROWS) == set(DiffusersImageOptions.model_fields)


@pytest.mark.parametrize("name", sorted(DiffusersImageOptions.model_fields))
def test_each_default_is_the_real_one(name: str) -> None:
    # a default of None is described in words ("none", "the pipeline's own")
    assert_default_written(DiffusersImageOptions.model_fields[name].default, ROWS[name])


def test_the_install_commands_are_the_real_ones() -> None:
    for command in (*TORCH_INSTALL_COMMANDS, _probe.LIBRARIES_INSTALL):
        assert f"`{command}`" in README
