"""Tiny random-weight pipelines built once per session, offline, and hosts over the plugin.

Each pipeline is built by ``motorpool_diffusers_image.tiny`` (Stable Diffusion, FLUX) or
here (a Wan video pipeline, which the image plugin must refuse), saved to a folder and
loaded back through the real loader. torch runs on one thread: with both cores busy its
default thread pool makes a 0.1 s generation take seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from motorpool import Host
from motorpool.types import ModelSpec
from motorpool_diffusers_image.tiny import build_flux, build_stable_diffusion

from tests.support import plugin_settings

PLUGIN = "diffusers-image"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion pipeline (64x64 images, multiples of 8)."""
    return build_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FLUX pipeline (multiples of 4: its VAE halves, its 2x2 patches halve again)."""
    return build_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")


@pytest.fixture(scope="session")
def wan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Wan text-to-video pipeline, for the refusal of video pipelines."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan  # noqa: PLC0415
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel  # noqa: PLC0415
    from diffusers.pipelines.wan.pipeline_wan import WanPipeline  # noqa: PLC0415
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import (  # noqa: PLC0415
        FlowMatchEulerDiscreteScheduler,
    )
    from motorpool.tiny import T5Size, t5_config, t5_tokenizer  # noqa: PLC0415
    from transformers import T5Config, UMT5EncoderModel  # noqa: PLC0415

    torch.manual_seed(0)
    tokenizer = t5_tokenizer()
    pipeline = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(t5_config(T5Config, T5Size(), len(tokenizer))),
        vae=AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]),
        transformer=WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("wan") / "tiny-wan"
    pipeline.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A real host with only this plugin, shared by a module's tests."""
    with Host(plugin_settings(PLUGIN, tmp_path_factory.mktemp("home"))) as running:
        yield running


@pytest.fixture(scope="module")
def sd(host: Host, sd_folder: Path) -> str:
    """The tiny Stable Diffusion pipeline, loaded once per module."""
    return host.load(ModelSpec(name="sd", plugin=PLUGIN, source=str(sd_folder))).id


@pytest.fixture(scope="module")
def flux(host: Host, flux_folder: Path) -> str:
    """The tiny FLUX pipeline, loaded once per module."""
    return host.load(ModelSpec(name="flux", plugin=PLUGIN, source=str(flux_folder))).id
