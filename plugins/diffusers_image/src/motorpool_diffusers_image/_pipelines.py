"""Typed views of diffusers' pipelines, and the pipeline families diffusers knows.

diffusers' pipelines are typed classes, but their ``__call__`` differs per family and the
auto-pipeline classes are untyped. The plugin calls a pipeline through
:class:`ImagePipeline`, which names only what it uses. Importing this module imports
diffusers (and torch): only the load path and the tiny model builder do.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Protocol, cast

import diffusers
from diffusers.pipelines import auto_pipeline
from diffusers.pipelines.auto_pipeline import AutoPipelineForImage2Image, AutoPipelineForText2Image
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

if TYPE_CHECKING:
    from PIL import Image

StepCallback = Callable[["ImagePipeline", int, object, dict[str, object]], dict[str, object]]


class PipelineOutput(Protocol):
    """What a text-to-image pipeline returns with ``output_type="pil"``."""

    images: list[Image.Image]


class ImagePipeline(Protocol):
    """The part of a diffusers text-to-image (or image-to-image) pipeline the plugin uses."""

    @property
    def components(self) -> dict[str, object]:
        """Every component by name (models, tokenizers, the scheduler)."""
        ...

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the running call (set before its first step)."""
        ...

    def __call__(self, **kwargs: object) -> PipelineOutput:
        """Run the pipeline."""
        ...

    def set_progress_bar_config(self, **kwargs: object) -> None:
        """Configure (here: disable) the pipeline's tqdm bar."""
        ...


# Families whose pipelines make videos, from diffusers' own task tables.
_VIDEO_TABLES = (
    auto_pipeline.AUTO_TEXT2VIDEO_PIPELINES_MAPPING,
    auto_pipeline.AUTO_IMAGE2VIDEO_PIPELINES_MAPPING,
    auto_pipeline.AUTO_VIDEO2VIDEO_PIPELINES_MAPPING,
    auto_pipeline.AUTO_CONDITION2VIDEO_PIPELINES_MAPPING,
)


def pipeline_class(name: str) -> type[DiffusionPipeline] | None:
    """The diffusers pipeline class called ``name``, or ``None`` if this diffusers lacks it."""
    found: object = getattr(diffusers, name, None)
    if isinstance(found, type) and issubclass(found, DiffusionPipeline):
        return found
    return None


def _family(name: str) -> str | None:
    """The family (``stable-diffusion``, ``flux``...) diffusers files a pipeline class under."""
    for table in cast("list[Mapping[str, type]]", auto_pipeline.SUPPORTED_TASKS_MAPPINGS):
        for family, cls in table.items():
            if cls.__name__ == name:
                return family
    return None


def makes_video(cls: type[DiffusionPipeline]) -> bool:
    """Whether a pipeline class makes videos (a video family, or a ``num_frames`` argument)."""
    tables = cast("tuple[Mapping[str, type], ...]", _VIDEO_TABLES)
    if any(cls in table.values() for table in tables):
        return True
    return "num_frames" in call_parameters(cls)


def text_to_image_class(cls: type[DiffusionPipeline]) -> type[DiffusionPipeline] | None:
    """The text-to-image pipeline ``AutoPipelineForText2Image`` loads for ``cls``'s family.

    ``None`` when diffusers files the class under no family with a text-to-image pipeline.
    """
    family = _family(cls.__name__)
    table = cast(
        "Mapping[str, type[DiffusionPipeline]]", auto_pipeline.AUTO_TEXT2IMAGE_PIPELINES_MAPPING
    )
    return table.get(family) if family is not None else None


@cache
def call_parameters(cls: type[object]) -> Mapping[str, inspect.Parameter]:
    """The keyword arguments of a pipeline class's ``__call__`` (read once per class)."""
    call: Callable[..., object] = cls.__call__
    return inspect.signature(call).parameters


def load_text_to_image(path: str, **kwargs: object) -> DiffusionPipeline:
    """``AutoPipelineForText2Image.from_pretrained``: the family's text-to-image pipeline."""
    loader = cast("Callable[..., DiffusionPipeline]", AutoPipelineForText2Image.from_pretrained)
    return loader(path, **kwargs)


def load_as(cls: type[DiffusionPipeline], path: str, **kwargs: object) -> DiffusionPipeline:
    """``cls.from_pretrained``: the pipeline class ``model_index.json`` names."""
    loader = cast("Callable[..., DiffusionPipeline]", cls.from_pretrained)
    return loader(path, **kwargs)


class _Scheduler(Protocol):
    """A diffusers scheduler: its config, and the classes that can take it over."""

    @property
    def config(self) -> Mapping[str, object]:
        """The scheduler's settings (betas, timestep spacing...)."""
        ...

    @property
    def compatibles(self) -> list[type]:
        """Scheduler classes that can be built from this one's config."""
        ...


def scheduler_names(pipeline: DiffusionPipeline) -> list[str]:
    """The pipeline's scheduler class and the classes that may replace it, sorted."""
    current = pipeline.components["scheduler"]
    scheduler = cast("_Scheduler", current)
    return sorted({type(current).__name__, *(c.__name__ for c in scheduler.compatibles)})


def swap_scheduler(pipeline: DiffusionPipeline, cls: type) -> None:
    """Replace the pipeline's scheduler with ``cls`` built from the current one's config."""
    scheduler = cast("_Scheduler", pipeline.components["scheduler"])
    build = cast("Callable[[Mapping[str, object]], object]", cls.from_config)
    register = cast("Callable[..., None]", pipeline.register_modules)
    register(scheduler=build(scheduler.config))


def image_to_image_of(pipeline: DiffusionPipeline) -> DiffusionPipeline | None:
    """The image-to-image pipeline sharing ``pipeline``'s components, if its family has one."""
    converter = cast(
        "Callable[[DiffusionPipeline], DiffusionPipeline]", AutoPipelineForImage2Image.from_pipe
    )
    try:
        return converter(pipeline)
    except ValueError:  # diffusers knows no image-to-image pipeline of this family
        return None


def view(pipeline: DiffusionPipeline) -> ImagePipeline:
    """The typed view of a loaded pipeline."""
    return cast("ImagePipeline", pipeline)
