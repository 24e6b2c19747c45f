"""A second test plugin that implements ``motorpool_generate`` and no stream.

It makes the host derive streaming from ``generate`` (progress through the context).
"""

from __future__ import annotations

from pathlib import Path

from motorpool import hookimpl
from motorpool.engine import Context, LoadedModel, ResolvedSource
from motorpool.errors import EngineFailed, UnsupportedCapability
from motorpool.types import (
    Capability,
    GenerationRequest,
    ImageRequest,
    ImageResult,
    ModelSpec,
    ProbeReport,
    ProgressEvent,
    ResultEvent,
)

from motorpool_testengine import plugin as base

CAPABILITIES = frozenset({Capability.IMAGE})


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    del deep
    return ProbeReport(ready=True, capabilities=CAPABILITIES, formats=(base.FORMAT,))


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    del spec, path
    return None  # never chosen automatically: the main test engine loads these files


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[base.TestModel]:
    loaded = base.motorpool_load(source, context)
    return LoadedModel(
        handle=loaded.handle, capabilities=CAPABILITIES, memory_bytes=loaded.memory_bytes
    )


@hookimpl
def motorpool_generate(
    model: LoadedModel[base.TestModel], request: GenerationRequest, context: Context
) -> ImageResult:
    if not isinstance(request, ImageRequest):
        raise UnsupportedCapability(f"this engine only makes images, not {request.kind}")
    for event in base.image_events(model.handle, request, context):
        if isinstance(event, ProgressEvent):
            context.progress(event.stage, event.step, event.total)
        elif isinstance(event, ResultEvent) and isinstance(event.result, ImageResult):
            return event.result
    raise EngineFailed("image generation ended without a result")
