"""The plugin's README stays true: its options table is the options model, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
from motorpool_world_engine import _probe
from motorpool_world_engine._options import WorldEngineOptions

from tests.support import options_table

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
ROWS = options_table(README)


def test_every_option_is_in_the_table_and_nothing_else() -> None:
    assert set(ROWS) == set(WorldEngineOptions.model_fields)


@pytest.mark.parametrize("name", sorted(WorldEngineOptions.model_fields))
def test_each_default_is_the_real_one(name: str) -> None:
    field = WorldEngineOptions.model_fields[name]
    default = field.get_default(call_default_factory=True)
    written = ROWS[name].strip()
    if default is None:
        assert written == "none"
    elif isinstance(default, dict):
        assert written == "`{}`"
        assert not default
    else:
        assert written == f"`{default}`"


def test_the_install_command_is_the_real_one() -> None:
    assert _probe.WORLD_ENGINE_INSTALL in README
