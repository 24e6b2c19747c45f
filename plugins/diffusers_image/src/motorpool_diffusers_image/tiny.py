"""Build random-weight diffusers pipelines offline, for tests, the self-check and benchmarks.

Each builder writes what ``DiffusionPipeline.from_pretrained`` reads from a real
checkpoint (``model_index.json`` and one folder per component) with random weights and
tokenizers made here: a CLIP byte-level BPE vocabulary (the 256 byte symbols, a few
whole words, the start and end tokens) and, for FLUX, the small T5 Unigram vocabulary
of :func:`motorpool.tiny.t5_tokenizer`. Nothing is downloaded. Speed does not depend on
the weights' values, so a random pipeline with a real model's dimensions benchmarks like
the real one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from motorpool.tiny import (
    WORDS,
    T5Size,
    construct,
    module_defaults,
    save_pretrained,
    t5_config,
    t5_tokenizer,
)
from motorpool.torchtools import FloatDtypeName
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

Dtype = FloatDtypeName
START, END = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True, slots=True)
class ClipConfig:
    """A CLIP text encoder."""

    hidden_size: int = 32
    intermediate_size: int = 37
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    projection_dim: int = 32


@dataclass(frozen=True, slots=True)
class VaeConfig:
    """An ``AutoencoderKL``: one down/up block per entry of ``channels``."""

    channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4


@dataclass(frozen=True, slots=True)
class StableDiffusionConfig:
    """A Stable Diffusion 1.x-style pipeline: a UNet, a VAE, one CLIP encoder."""

    unet_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    sample_size: int = 32
    clip: ClipConfig = ClipConfig()
    vae: VaeConfig = VaeConfig()


@dataclass(frozen=True, slots=True)
class FluxConfig:
    """A FLUX pipeline: the transformer, a VAE, a CLIP and a T5 encoder."""

    num_layers: int = 1
    num_single_layers: int = 1
    attention_head_dim: int = 16
    num_attention_heads: int = 2
    joint_attention_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (4, 4, 8)
    guidance_embeds: bool = False
    t5_d_model: int = 32
    t5_d_ff: int = 37
    t5_layers: int = 2
    t5_heads: int = 4
    t5_d_kv: int = 8
    t5_vocab_size: int | None = None
    """Rows of T5's embedding (default: the tokenizer's size)."""
    clip: ClipConfig = ClipConfig()
    vae: VaeConfig = VaeConfig()
    vae_shift_factor: float = 0.0609
    vae_scaling_factor: float = 1.5035


TINY_SD = StableDiffusionConfig()
"""About 1.7 M parameters: 64x64 images (the UNet's 32 latents x the VAE's 2) in ~0.1 s."""
MID_SD = StableDiffusionConfig(
    unet_channels=(64, 128, 256),
    layers_per_block=2,
    attention_head_dim=8,
    sample_size=64,
    clip=ClipConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4),
    vae=VaeConfig(channels=(32, 64, 128), layers_per_block=1),
)
"""About 30 M parameters: slow enough per step that the pipeline, not the host, dominates."""
TINY_FLUX = FluxConfig()
"""About 0.3 M parameters; the VAE's 4 latent channels are the transformer's 16 in 2x2 patches."""
FLUX_SCHNELL = FluxConfig(
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    axes_dims_rope=(16, 56, 56),
    t5_d_model=4096,
    t5_d_ff=10240,
    t5_layers=24,
    t5_heads=64,
    t5_d_kv=64,
    t5_vocab_size=32128,
    clip=ClipConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        projection_dim=768,
    ),
    vae=VaeConfig(channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16),
    vae_shift_factor=0.1159,
    vae_scaling_factor=0.3611,
)
"""FLUX.1-schnell's dimensions: a 12 B transformer, T5-XXL and CLIP-L (about 17 B in all)."""


def clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """A byte-level BPE tokenizer in CLIP's format: every byte, the words of :data:`WORDS`."""
    symbols = list(_byte_symbols().values())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab |= {f"{symbol}</w>": len(symbols) + index for index, symbol in enumerate(symbols)}
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        done = word[0] if len(word) > 1 else f"{word}</w>"
        for position, char in enumerate(word[1:], start=1):
            piece = f"{char}</w>" if position == len(word) - 1 else char
            if (done, piece) not in merges:
                merges.append((done, piece))
            done += piece
            vocab.setdefault(done, len(vocab))
    vocab |= {START: len(vocab), END: len(vocab) + 1}
    return construct(CLIPTokenizer, vocab=vocab, merges=merges, model_max_length=max_length)


def build_stable_diffusion(
    directory: Path,
    config: StableDiffusionConfig = TINY_SD,
    *,
    dtype: Dtype = "float32",
    seed: int = 0,
    tokenizer_max_length: int = 77,
) -> Path:
    """Write a random-weight Stable Diffusion pipeline folder into ``directory``.

    ``tokenizer_max_length`` over 77 writes a tokenizer that claims more positions than
    its CLIP encoder has, as some hand-made pipelines do (the plugin must cap it).
    """
    tokenizer = clip_tokenizer(tokenizer_max_length)
    blocks = len(config.unet_channels)
    with module_defaults("cpu", dtype, seed):
        unet = construct(
            UNet2DConditionModel,
            sample_size=config.sample_size,
            in_channels=config.vae.latent_channels,
            out_channels=config.vae.latent_channels,
            block_out_channels=config.unet_channels,
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",),
            cross_attention_dim=config.clip.hidden_size,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=32,
        )
        vae, text_encoder = _vae(config.vae), _clip(config.clip, tokenizer)
    pipeline = construct(
        StableDiffusionPipeline,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save_pretrained(pipeline, directory)


def build_flux(
    directory: Path,
    config: FluxConfig = TINY_FLUX,
    *,
    dtype: Dtype = "float32",
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Write a random-weight FLUX pipeline folder into ``directory``.

    ``device`` is where the weights are made: ``cuda`` initialises a real-size
    transformer in seconds where the CPU takes many minutes.
    """
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    with module_defaults(device, dtype, seed):
        transformer = construct(
            FluxTransformer2DModel,
            patch_size=1,
            in_channels=config.vae.latent_channels * 4,  # 2x2 patches of latents
            num_layers=config.num_layers,
            num_single_layers=config.num_single_layers,
            attention_head_dim=config.attention_head_dim,
            num_attention_heads=config.num_attention_heads,
            joint_attention_dim=config.joint_attention_dim,
            pooled_projection_dim=config.clip.projection_dim,
            guidance_embeds=config.guidance_embeds,
            axes_dims_rope=config.axes_dims_rope,
        )
        t5_size = T5Size(
            d_model=config.t5_d_model,
            d_kv=config.t5_d_kv,
            d_ff=config.t5_d_ff,
            num_layers=config.t5_layers,
            num_heads=config.t5_heads,
        )
        text_encoder_2 = T5EncoderModel(
            t5_config(
                T5Config,
                t5_size,
                config.t5_vocab_size or len(tokenizer_2),
                buckets=8 if config.t5_vocab_size is None else 32,
            )
        )
        vae = _vae(config.vae, shift=config.vae_shift_factor, scale=config.vae_scaling_factor)
        text_encoder = _clip(config.clip, tokenizer)
    pipeline = construct(
        FluxPipeline,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    return save_pretrained(pipeline, directory)


def _clip(config: ClipConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (START, END)}
    return CLIPTextModel(
        construct(
            CLIPTextConfig,
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            projection_dim=config.projection_dim,
            max_position_embeddings=77,
            bos_token_id=ids[START],
            eos_token_id=ids[END],
            pad_token_id=ids[END],
        )
    )


def _vae(config: VaeConfig, *, shift: float | None = None, scale: float = 0.18215) -> AutoencoderKL:
    blocks = len(config.channels)
    flux = shift is not None  # FLUX's VAE: shifted latents, no quantisation convolutions
    return construct(
        AutoencoderKL,
        block_out_channels=config.channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=32,
        use_quant_conv=not flux,
        use_post_quant_conv=not flux,
        shift_factor=shift,
        scaling_factor=scale,
    )


def _byte_symbols() -> dict[int, str]:
    """Every byte as one printable character, as byte-level BPE vocabularies spell them.

    Printable Latin-1 bytes stand for themselves; the others (controls, space, ...) are
    given the characters from U+0100 on, in byte order.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(0x100 + shifted)
            shifted += 1
    return symbols
