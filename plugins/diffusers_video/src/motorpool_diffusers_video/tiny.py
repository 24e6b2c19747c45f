"""Build random-weight diffusers video pipelines offline, for tests, the self-check and benchmarks.

Each builder writes what ``DiffusionPipeline.from_pretrained`` reads from a real
checkpoint (``model_index.json`` and one folder per component) with random weights and
the small T5 Unigram tokenizer of :func:`motorpool.tiny.t5_tokenizer`. Nothing is
downloaded. Speed does not depend on the weights' values, so a random pipeline with a
real model's dimensions benchmarks like the real one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX
from diffusers.models.autoencoders.autoencoder_kl_ltx import AutoencoderKLLTXVideo
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from diffusers.models.transformers.transformer_ltx import LTXVideoTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline
from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline
from diffusers.pipelines.wan.pipeline_wan import WanPipeline
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from diffusers.schedulers.scheduling_ddim_cogvideox import CogVideoXDDIMScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from motorpool.tiny import (
    T5Size,
    construct,
    module_defaults,
    save_pretrained,
    t5_config,
    t5_tokenizer,
)
from motorpool.torchtools import FloatDtypeName
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

Dtype = FloatDtypeName


@dataclass(frozen=True, slots=True)
class WanConfig:
    """A Wan 2.x text-to-video pipeline: the 3D transformer, Wan's VAE, a UMT5 encoder."""

    num_attention_heads: int = 2
    attention_head_dim: int = 12
    ffn_dim: int = 32
    num_layers: int = 2
    rope_max_seq_len: int = 32
    vae_base_dim: int = 3
    vae_dim_mult: tuple[int, ...] = (1, 1, 1, 1)
    vae_res_blocks: int = 1
    text: T5Size = T5Size()


TINY_WAN = WanConfig()
"""About 0.3 M parameters: 32x32, 5 frames, 2 steps in well under a second on a CPU."""
WAN_1_3B = WanConfig(
    num_attention_heads=12,
    attention_head_dim=128,
    ffn_dim=8960,
    num_layers=30,
    rope_max_seq_len=1024,
    vae_base_dim=96,
    vae_dim_mult=(1, 2, 4, 4),
    vae_res_blocks=2,
    text=T5Size(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
)
"""Wan2.1-T2V-1.3B's dimensions (UMT5-XXL with the tiny vocabulary's embedding rows)."""


@dataclass(frozen=True, slots=True)
class LtxConfig:
    """An LTX-Video pipeline: the 3D transformer, LTX's VAE, a T5 encoder."""

    num_attention_heads: int = 4
    attention_head_dim: int = 8
    num_layers: int = 1
    vae_channels: int = 8
    text: T5Size = T5Size()


TINY_LTX = LtxConfig()
"""A few thousand parameters; the VAE compresses 4x in space and time."""


def build_wan(
    directory: Path,
    config: WanConfig = TINY_WAN,
    *,
    device: str = "cpu",
    dtype: Dtype = "float32",
    seed: int = 0,
) -> Path:
    """Write a random-weight ``WanPipeline`` to ``directory``; return it."""
    tokenizer = t5_tokenizer()
    with module_defaults(device, dtype, seed):
        text_encoder = UMT5EncoderModel(t5_config(UMT5Config, config.text, len(tokenizer)))
        vae = _wan_vae(config)
        transformer = _wan_transformer(config)
    pipeline = construct(
        WanPipeline,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    return save_pretrained(pipeline, directory)


def build_wan_i2v(
    directory: Path,
    config: WanConfig = TINY_WAN,
    *,
    device: str = "cpu",
    dtype: Dtype = "float32",
    seed: int = 0,
) -> Path:
    """Write a random-weight ``WanImageToVideoPipeline`` (Wan 2.1 I2V's layout) to ``directory``.

    Its transformer takes 36 channels (the noise, the first frame's latents and their
    mask) and the first frame's CLIP vision features through added key/value projections.
    """
    tokenizer = t5_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    with module_defaults(device, dtype, seed):
        text_encoder = UMT5EncoderModel(t5_config(UMT5Config, config.text, len(tokenizer)))
        vae = _wan_vae(config)
        transformer = _wan_transformer(
            config,
            in_channels=36,
            image_dim=vision.hidden_size,
            added_kv_proj_dim=config.num_attention_heads * config.attention_head_dim,
        )
        image_encoder = CLIPVisionModel(vision)
    pipeline = construct(
        WanImageToVideoPipeline,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_encoder=image_encoder,
        image_processor=construct(
            CLIPImageProcessor,
            size={"shortest_edge": vision.image_size},
            crop_size={"height": vision.image_size, "width": vision.image_size},
        ),
    )
    return save_pretrained(pipeline, directory)


def _wan_vae(config: WanConfig) -> AutoencoderKLWan:
    return construct(
        AutoencoderKLWan,
        base_dim=config.vae_base_dim,
        z_dim=16,
        dim_mult=list(config.vae_dim_mult),
        num_res_blocks=config.vae_res_blocks,
        temperal_downsample=[False, True, True],
    )


def _wan_transformer(config: WanConfig, **extra: object) -> WanTransformer3DModel:
    settings: dict[str, object] = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": config.num_attention_heads,
        "attention_head_dim": config.attention_head_dim,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": config.text.d_model,
        "freq_dim": 256,
        "ffn_dim": config.ffn_dim,
        "num_layers": config.num_layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": config.rope_max_seq_len,
    }
    return construct(WanTransformer3DModel, **(settings | extra))


def build_ltx(
    directory: Path,
    config: LtxConfig = TINY_LTX,
    *,
    device: str = "cpu",
    dtype: Dtype = "float32",
    seed: int = 0,
) -> Path:
    """Write a random-weight ``LTXPipeline`` to ``directory``; return it."""
    tokenizer = t5_tokenizer()
    channels = (config.vae_channels,) * 4
    with module_defaults(device, dtype, seed):
        text_encoder = T5EncoderModel(t5_config(T5Config, config.text, len(tokenizer)))
        # Every decoder_* argument is given: left out, the decoder takes LTX's full size.
        vae = construct(
            AutoencoderKLLTXVideo,
            latent_channels=8,
            block_out_channels=channels,
            decoder_block_out_channels=channels,
            layers_per_block=(1,) * 5,
            decoder_layers_per_block=(1,) * 5,
            spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4,
            upsample_factor=(1,) * 4,
            timestep_conditioning=False,
            patch_size=1,
            patch_size_t=1,
        )
        transformer = construct(
            LTXVideoTransformer3DModel,
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=config.num_attention_heads,
            attention_head_dim=config.attention_head_dim,
            cross_attention_dim=config.num_attention_heads * config.attention_head_dim,
            num_layers=config.num_layers,
            caption_channels=config.text.d_model,
        )
    pipeline = construct(
        LTXPipeline,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    return save_pretrained(pipeline, directory)


def build_cogvideox(
    directory: Path, *, device: str = "cpu", dtype: Dtype = "float32", seed: int = 0
) -> Path:
    """Write a tiny random-weight ``CogVideoXPipeline`` (prompts of 16 tokens) to ``directory``."""
    tokenizer = t5_tokenizer()
    text = T5Size()
    with module_defaults(device, dtype, seed):
        text_encoder = T5EncoderModel(t5_config(T5Config, text, len(tokenizer)))
        vae = construct(
            AutoencoderKLCogVideoX,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
        transformer = construct(
            CogVideoXTransformer3DModel,
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=text.d_model,
            num_layers=1,
            sample_width=2,
            sample_height=2,
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=16,
        )
    pipeline = construct(
        CogVideoXPipeline,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )
    return save_pretrained(pipeline, directory)
