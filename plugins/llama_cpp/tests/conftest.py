"""Tiny GGUF models built once per session, offline, and a host over the real plugin."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from motorpool import Host, Settings
from motorpool_llama_cpp.tiny import TINY, build_gguf


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gguf")
    build_gguf(directory / "tiny.gguf")
    # Also four heads of 16: too narrow for a quantised KV cache (blocks of 32).
    narrow = replace(TINY, heads=4, kv_heads=2)
    build_gguf(directory / "no-template.gguf", narrow, chat_template=None)
    return directory


@pytest.fixture(scope="session")
def tiny_gguf(gguf_dir: Path) -> Path:
    return gguf_dir / "tiny.gguf"


@pytest.fixture(scope="session")
def no_template_gguf(gguf_dir: Path) -> Path:
    return gguf_dir / "no-template.gguf"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with Host(Settings(home=tmp_path, plugins="llama-cpp", keep_alive_s=-1)) as running:
        yield running
