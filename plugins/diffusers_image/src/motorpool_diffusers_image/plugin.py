"""motorpool's diffusers engine: text-to-image and image-to-image pipelines.

Loads any diffusers text-to-image pipeline folder (Stable Diffusion 1.x/2.x, SDXL, SD3,
FLUX, ...) or Hugging Face repo (downloaded by the host). Importing this module is
cheap: torch, diffusers and transformers are imported in ``motorpool_load``, the tiny
model builder and the deep probe, never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from motorpool import hookimpl, torchtools
from motorpool.diffusers_folder import PipelineFolder, match_score
from motorpool.engine import Context, LoadedModel, ResolvedSource, TinyModel
from motorpool.errors import UnsupportedCapability
from motorpool.types import (
    Capability,
    GenerationRequest,
    ImageRequest,
    ImageResult,
    ModelSpec,
    ProbeReport,
)

from motorpool_diffusers_image import _probe
from motorpool_diffusers_image._folder import image_folder
from motorpool_diffusers_image._options import DiffusersImageOptions

if TYPE_CHECKING:
    from motorpool_diffusers_image._engine import DiffusersModel

PLUGIN = "diffusers-image"
_HUB_NAMES = ("stable-diffusion", "sdxl", "sd-turbo", "flux", "sd3", "pixart", "kandinsky")
"""Words in a hub repo id that name a text-to-image family, for repos not downloaded yet."""


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    return _probe.probe(deep)


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    return match_score(spec.source, path, hub_words=_HUB_NAMES, video=False)


@hookimpl
def motorpool_tiny_model(directory: Path) -> TinyModel | None:
    if not _probe.probe(deep=False).ready:
        return None
    from motorpool_diffusers_image.tiny import build_stable_diffusion  # noqa: PLC0415 - torch

    path = build_stable_diffusion(directory / "tiny-sd")
    return TinyModel(
        spec=ModelSpec(plugin=PLUGIN, source=str(path)),
        request=ImageRequest(prompt="a red square", width=64, height=64, steps=2, seed=0),
    )


@hookimpl
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    options = source.options(DiffusersImageOptions)
    folder = image_folder(source.path)
    return estimate_memory(folder, options)


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[DiffusersModel]:
    options = source.options(DiffusersImageOptions)
    folder = image_folder(source.path)
    if options.variant is not None:
        folder.check_variant(options.variant)

    def load() -> DiffusersModel:
        from motorpool_diffusers_image import _engine  # noqa: PLC0415 - imports torch, diffusers

        return _engine.load(folder, options, label=source.repo_id or folder.path.name)

    model = context.load_uninterruptible(folder.path.name, load)  # from_pretrained cannot stop
    capabilities = {Capability.IMAGE}
    if model.image_to_image:
        capabilities.add(Capability.IMAGE_TO_IMAGE)
    return LoadedModel(
        handle=model,
        capabilities=frozenset(capabilities),
        memory_bytes=model.memory_bytes,
        max_concurrency=1,  # a pipeline (its scheduler) runs one call at a time
        details=model.details(),
    )


@hookimpl
def motorpool_unload(model: LoadedModel[DiffusersModel]) -> None:
    model.handle.close()


@hookimpl
def motorpool_generate(
    model: LoadedModel[DiffusersModel], request: GenerationRequest, context: Context
) -> ImageResult:
    if not isinstance(request, ImageRequest):
        raise UnsupportedCapability(f"diffusers-image generates images, not {request.kind}")
    return model.handle.generate(request, context)


def estimate_memory(folder: PipelineFolder, options: DiffusersImageOptions) -> int:
    """The weights of every component, floats counted at the dtype the options give."""
    per_value = torchtools.planned_dtype_bytes(options.device, options.dtype)
    return folder.weights_bytes(per_value, options.variant)
