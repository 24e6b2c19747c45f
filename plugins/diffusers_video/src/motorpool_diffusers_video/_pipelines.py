"""Typed views of diffusers' video pipelines, and what each family needs of its inputs.

diffusers' pipelines are typed classes, but their ``__call__`` differs per family and
their loaders are loosely annotated. The plugin calls a pipeline through
:class:`VideoPipeline`, which names only what it uses. Importing this module imports
diffusers (and torch): only the load path and the tiny model builder do.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import diffusers
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

IMAGE_TO_VIDEO_TWINS = {"LTXPipeline": "LTXImageToVideoPipeline"}
"""Text-to-video pipelines whose weights also drive an image-to-video pipeline.

Wan 2.1 and CogVideoX have separate image-to-video checkpoints (more input channels), so
only their own image-to-video folders do image-to-video.
"""

SIDE_CHECKS = {"LTX": 32}
"""Families whose pipelines check sides against a fixed number, whatever their VAE."""
LATENT_FRAME_PAIRS = ("CogVideoX",)
"""Families whose VAE decodes an odd number of latent frames to ``1 + 4n`` frames but an
even number to ``4n``: their frame counts are ``8k+1`` (CogVideoX's 49 is one)."""


class PipelineOutput(Protocol):
    """What a video pipeline returns with ``output_type="np"``."""

    @property
    def frames(self) -> object:
        """A ``(batch, frames, height, width, 3)`` float array in ``[0, 1]``."""
        ...


class VideoPipeline(Protocol):
    """The part of a diffusers video pipeline the plugin uses."""

    @property
    def components(self) -> dict[str, object]:
        """Every component by name (models, tokenizers, the scheduler)."""
        ...

    def __call__(self, **kwargs: object) -> PipelineOutput:
        """Run the pipeline."""
        ...

    def set_progress_bar_config(self, **kwargs: object) -> None:
        """Configure (here: disable) the pipeline's tqdm bar."""
        ...


@dataclass(frozen=True, slots=True)
class Factors:
    """How a pipeline's latents relate to pixels: what frames and sides must fit."""

    temporal: int
    """Frames must be one more than a multiple of this (4 for Wan, LTX and CogVideoX)."""
    spatial: int
    """Width and height must be multiples of this (VAE compression times patch size)."""


def pipeline_class(name: str) -> type[DiffusionPipeline] | None:
    """The diffusers pipeline class called ``name``, or ``None`` if this diffusers lacks it."""
    found: object = getattr(diffusers, name, None)
    if isinstance(found, type) and issubclass(found, DiffusionPipeline):
        return found
    return None


def call_parameters(cls: type[object]) -> Mapping[str, inspect.Parameter]:
    """The keyword arguments of a pipeline class's ``__call__``."""
    call: Callable[..., object] = cls.__call__
    return inspect.signature(call).parameters


def call_default(cls: type[object], name: str) -> object:
    """The default of one ``__call__`` argument (``None`` when it has none)."""
    parameter = call_parameters(cls).get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return cast("object", parameter.default)


def load_as(cls: type[DiffusionPipeline], path: str, **kwargs: object) -> DiffusionPipeline:
    """``cls.from_pretrained``: the pipeline class ``model_index.json`` names."""
    loader = cast("Callable[..., DiffusionPipeline]", cls.from_pretrained)
    return loader(path, **kwargs)


def image_to_video_of(pipeline: DiffusionPipeline) -> DiffusionPipeline | None:
    """The image-to-video pipeline sharing ``pipeline``'s components, if its family has one."""
    twin = pipeline_class(IMAGE_TO_VIDEO_TWINS.get(type(pipeline).__name__, ""))
    if twin is None:
        return None
    converter = cast("Callable[[DiffusionPipeline], DiffusionPipeline]", twin.from_pipe)
    return converter(pipeline)


def factors(pipeline: DiffusionPipeline) -> Factors:
    """The pipeline's temporal and spatial factors, read from the attributes each family sets."""
    temporal = _int_attribute(
        pipeline, "vae_scale_factor_temporal", "vae_temporal_compression_ratio"
    )
    spatial = _int_attribute(pipeline, "vae_scale_factor_spatial", "vae_spatial_compression_ratio")
    patch = _int_attribute(pipeline, "transformer_spatial_patch_size") or _transformer_patch(
        pipeline
    )
    side = (spatial or 8) * (patch or 1)
    for prefix, multiple in SIDE_CHECKS.items():
        if type(pipeline).__name__.startswith(prefix):
            side = math.lcm(side, multiple)
    frames = temporal or 1
    if type(pipeline).__name__.startswith(LATENT_FRAME_PAIRS):
        frames *= 2
    return Factors(temporal=frames, spatial=side)


def text_length(pipeline: DiffusionPipeline) -> int | None:
    """The prompt length a transformer was built for (CogVideoX's ``max_text_seq_length``).

    Such a pipeline must be called with ``max_sequence_length`` equal to it.
    """
    transformer = pipeline.components.get("transformer")
    config: object = getattr(transformer, "config", None)
    length: object = getattr(config, "max_text_seq_length", None)
    return length if isinstance(length, int) else None


def _int_attribute(pipeline: DiffusionPipeline, *names: str) -> int | None:
    for name in names:
        value: object = getattr(pipeline, name, None)
        if isinstance(value, int):
            return value
    return None


def _transformer_patch(pipeline: DiffusionPipeline) -> int | None:
    """The transformer's spatial patch: Wan's ``(t, h, w)`` tuple or CogVideoX's one number."""
    transformer = pipeline.components.get("transformer")
    config: object = getattr(transformer, "config", None)
    patch: object = getattr(config, "patch_size", None)
    if isinstance(patch, int):
        return patch
    if isinstance(patch, list | tuple):
        sides = [p for p in cast("Sequence[object]", patch)[1:] if isinstance(p, int)]
        return max(sides) if sides else None
    return None


def view(pipeline: DiffusionPipeline) -> VideoPipeline:
    """The typed view of a loaded pipeline."""
    return cast("VideoPipeline", pipeline)
