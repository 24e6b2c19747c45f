"""motorpool's diffusers video engine: text-to-video and image-to-video pipelines.

Loads diffusers video pipeline folders (Wan 2.x, LTX-Video, CogVideoX, ...) or Hugging
Face repos (downloaded by the host), makes a clip and encodes it to MP4 (H.264).
Importing this module is cheap: torch, diffusers and transformers are imported in
``motorpool_load``, the tiny model builder and the deep probe, never here.
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
    ModelSpec,
    ProbeReport,
    VideoRequest,
    VideoResult,
)

from motorpool_diffusers_video import _probe
from motorpool_diffusers_video._folder import video_folder
from motorpool_diffusers_video._options import DiffusersVideoOptions

if TYPE_CHECKING:
    from motorpool_diffusers_video._engine import VideoModel

PLUGIN = "diffusers-video"
_HUB_NAMES = ("wan2", "wan-ai", "ltx-video", "cogvideox", "text-to-video", "t2v", "i2v")
"""Words in a hub repo id that name a video family, for repos not downloaded yet."""
ACTIVATION_FACTOR = 1.25
"""The estimate adds a quarter to the weights for activations and the VAE's decode."""


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    return _probe.probe(deep)


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    return match_score(spec.source, path, hub_words=_HUB_NAMES, video=True)


@hookimpl
def motorpool_tiny_model(directory: Path) -> TinyModel | None:
    if not _probe.probe(deep=False).ready:
        return None
    from motorpool_diffusers_video.tiny import build_wan  # noqa: PLC0415 - imports torch

    path = build_wan(directory / "tiny-wan")
    return TinyModel(
        spec=ModelSpec(plugin=PLUGIN, source=str(path)),
        request=VideoRequest(
            prompt="a red square", frames=5, width=32, height=32, steps=2, fps=8, seed=0
        ),
    )


@hookimpl
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    options = source.options(DiffusersVideoOptions)
    return estimate_memory(video_folder(source.path), options)


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[VideoModel]:
    options = source.options(DiffusersVideoOptions)
    folder = video_folder(source.path)

    def load() -> VideoModel:
        from motorpool_diffusers_video import _engine  # noqa: PLC0415 - imports torch, diffusers

        return _engine.load(folder, options, label=source.repo_id or folder.path.name)

    model = context.load_uninterruptible(folder.path.name, load)  # from_pretrained cannot stop
    capabilities: set[Capability] = set()
    if model.text_to_video:
        capabilities.add(Capability.VIDEO)
    if model.image_to_video:
        capabilities.add(Capability.IMAGE_TO_VIDEO)
    return LoadedModel(
        handle=model,
        capabilities=frozenset(capabilities),
        memory_bytes=model.memory_bytes,
        max_concurrency=1,  # a pipeline (its scheduler) runs one call at a time
        details=model.details(),
    )


@hookimpl
def motorpool_unload(model: LoadedModel[VideoModel]) -> None:
    model.handle.close()


@hookimpl
def motorpool_generate(
    model: LoadedModel[VideoModel], request: GenerationRequest, context: Context
) -> VideoResult:
    if not isinstance(request, VideoRequest):
        raise UnsupportedCapability(f"diffusers-video generates videos, not {request.kind}")
    return model.handle.generate(request, context)


def estimate_memory(folder: PipelineFolder, options: DiffusersVideoOptions) -> int:
    """The weights of every component at the dtype the options give, plus activations."""
    per_value = torchtools.planned_dtype_bytes(options.device, options.dtype)
    return int(folder.weights_bytes(per_value) * ACTIVATION_FACTOR)
