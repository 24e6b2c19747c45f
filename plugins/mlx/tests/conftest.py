"""Fixtures of the MLX plugin's tests: one tiny model per session, a host that has it loaded.

The tiny model is a random-weight Llama in Hugging Face format with a trained BPE
tokenizer (``motorpool_mlx.tiny``), built offline in about a second and loaded through
the real ``mlx_lm.load``. Its output is gibberish, so tests that need known text steer
it with ``logit_bias``: a +100 bias on one token makes every step pick that token.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from motorpool import Host
from motorpool.types import ModelSpec
from motorpool_mlx.tiny import build_model
from tokenizers import Tokenizer

from tests.support import plugin_settings


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, built once per session."""
    return build_model(tmp_path_factory.mktemp("mlx") / "tiny-llama")


@pytest.fixture(scope="session")
def tokenizer(tiny_folder: Path) -> Tokenizer:
    """The tiny model's tokenizer, read with ``tokenizers`` to find token ids."""
    return Tokenizer.from_file(str(tiny_folder / "tokenizer.json"))


@pytest.fixture
def copy_of_tiny(tiny_folder: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder, for tests that break or change it."""
    return Path(shutil.copytree(tiny_folder, tmp_path / "copy"))


@pytest.fixture(scope="module")
def mlx_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A real host with only the MLX plugin, shared by a module's tests."""
    home = tmp_path_factory.mktemp("home")
    with Host(plugin_settings("mlx", home)) as host:
        yield host


@pytest.fixture(scope="module")
def model_id(mlx_host: Host, tiny_folder: Path) -> str:
    """The tiny model, loaded once per module."""
    return mlx_host.load(ModelSpec(plugin="mlx", source=str(tiny_folder))).id


@pytest.fixture(scope="session")
def token(tokenizer: Tokenizer) -> Callable[[str], int]:
    """Look up the id of a text that is one token of the tiny vocabulary."""

    def token_id(text: str) -> int:
        ids: list[int] = tokenizer.encode(text).ids
        assert len(ids) == 1, f"{text!r} is {len(ids)} tokens: {tokenizer.encode(text).tokens}"
        return ids[0]

    return token_id
