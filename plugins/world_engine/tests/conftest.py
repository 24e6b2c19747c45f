"""Tiny world models built once per session, offline, and hosts over the plugin.

The models are the plugin's own (``motorpool_world_engine.tiny``): world_engine's
interface over a few convolutions, in the sizes and timings each test needs. torch runs
on one thread (two cores are shared with the rest of the suite).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from motorpool import Host, Settings
from motorpool.types import ModelSpec, SeedFrame
from motorpool_world_engine.plugin import PLUGIN, tiny_seed
from motorpool_world_engine.tiny import TinyWorldConfig, build
from pydantic import JsonValue

from tests.support import plugin_settings

torch.set_num_threads(1)


def settings(home: Path, **overrides: object) -> Settings:
    """A host over a private home that discovers only this plugin and never unloads idle models."""
    return plugin_settings(PLUGIN, home, **overrides)


def spec(folder: Path, **options: JsonValue) -> ModelSpec:
    """A spec for a model folder, loaded by this plugin."""
    return ModelSpec(plugin=PLUGIN, source=str(folder), options=options)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to build tiny world models in, once per test session."""
    return tmp_path_factory.mktemp("world-models")


@pytest.fixture(scope="session")
def world(models: Path) -> Path:
    """A single-frame tiny world model (32x48, 64 frames of context, 30 fps)."""
    return build(models / "world")


@pytest.fixture(scope="session")
def subframes(models: Path) -> Path:
    """A tiny model that makes 4 sub-frames per pass, as Waypoint-1.5 does."""
    return build(models / "subframes", TinyWorldConfig(temporal_compression=4, n_frames=16))


@pytest.fixture(scope="session")
def short(models: Path) -> Path:
    """A tiny model whose context holds 4 frames (the seed and three more)."""
    return build(models / "short", TinyWorldConfig(n_frames=4))


@pytest.fixture(scope="session")
def prompted(models: Path) -> Path:
    """A tiny model with prompt conditioning."""
    return build(models / "prompted", TinyWorldConfig(prompt_conditioning=True))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    """A real host over the plugin, closed (every model unloaded) after the test."""
    home = tmp_path / "home"
    home.mkdir()
    with Host(settings(home)) as host:
        yield host


@pytest.fixture(scope="session")
def seed() -> SeedFrame:
    """The plugin's own seed image (48x32 PNG)."""
    return tiny_seed()
