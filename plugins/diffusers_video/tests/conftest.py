"""Tiny random-weight pipelines built once per session, offline, and hosts over the plugin.

Each video pipeline is built by ``motorpool_diffusers_video.tiny`` (Wan, LTX-Video), saved
to a folder and loaded back through the real loader. torch runs on one thread: with both
cores busy its default thread pool makes a 0.1 s generation take seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from motorpool import Host
from motorpool.types import ModelSpec
from motorpool_diffusers_video.tiny import build_cogvideox, build_ltx, build_wan, build_wan_i2v
from numpy.typing import NDArray

from tests.support import plugin_settings

PLUGIN = "diffusers-video"

torch.set_num_threads(1)


@dataclass(frozen=True)
class Decoded:
    """An MP4 read back by imageio's ffmpeg reader."""

    frames: NDArray[np.uint8]
    """``(frames, height, width, 3)``."""
    fps: float
    codec: str


def decode_mp4(video: bytes, folder: Path) -> Decoded:
    """Every frame of an MP4, and what its stream says of itself."""
    path = folder / "clip.mp4"
    path.write_bytes(video)
    frames = iio.imread(path, plugin="FFMPEG", index=None)
    meta = iio.immeta(path, plugin="FFMPEG")
    path.unlink()
    return Decoded(frames=np.asarray(frames), fps=float(meta["fps"]), codec=str(meta["codec"]))


def image_pipeline_folder(directory: Path) -> Path:
    """A Stable Diffusion folder as a hub snapshot lays it out (index and component folders)."""
    directory.mkdir(parents=True)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    }
    (directory / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    for name in index:
        if not name.startswith("_"):
            (directory / name).mkdir()
    return directory


@pytest.fixture(scope="session")
def wan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Wan pipeline (4k+1 frames, sides multiples of 16)."""
    return build_wan(tmp_path_factory.mktemp("wan") / "tiny-wan")


@pytest.fixture(scope="session")
def wan_i2v_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Wan 2.1 image-to-video pipeline (CLIP vision encoder, 36-channel transformer)."""
    return build_wan_i2v(tmp_path_factory.mktemp("wan-i2v") / "tiny-wan-i2v")


@pytest.fixture(scope="session")
def ltx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LTX-Video pipeline (4k+1 frames, sides multiples of 4; image-to-video too)."""
    return build_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx")


@pytest.fixture(scope="session")
def cogvideox_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CogVideoX pipeline (8k+1 frames, sides multiples of 16, 16-token prompts)."""
    return build_cogvideox(tmp_path_factory.mktemp("cogvideox") / "tiny-cogvideox")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A real host with only this plugin, shared by a module's tests."""
    with Host(plugin_settings(PLUGIN, tmp_path_factory.mktemp("home"))) as running:
        yield running


@pytest.fixture(scope="module")
def wan(host: Host, wan_folder: Path) -> str:
    """The tiny Wan pipeline, loaded once per module."""
    return host.load(ModelSpec(name="wan", plugin=PLUGIN, source=str(wan_folder))).id


@pytest.fixture(scope="module")
def wan_i2v(host: Host, wan_i2v_folder: Path) -> str:
    """The tiny Wan image-to-video pipeline, loaded once per module."""
    return host.load(ModelSpec(name="wan-i2v", plugin=PLUGIN, source=str(wan_i2v_folder))).id


@pytest.fixture(scope="module")
def ltx(host: Host, ltx_folder: Path) -> str:
    """The tiny LTX pipeline, loaded once per module."""
    return host.load(ModelSpec(name="ltx", plugin=PLUGIN, source=str(ltx_folder))).id


@pytest.fixture(scope="module")
def cogvideox(host: Host, cogvideox_folder: Path) -> str:
    """The tiny CogVideoX pipeline, loaded once per module."""
    spec = ModelSpec(name="cogvideox", plugin=PLUGIN, source=str(cogvideox_folder))
    return host.load(spec).id
