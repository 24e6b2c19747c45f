"""motorpool's world_engine plugin: interactive world models as sessions.

Loads Overworld's world models (Waypoint-1, Waypoint-1.5) through world_engine — GPL-3.0,
installed from its repository — and opens sessions on them: a seed image, then one pass
of the model per step under the newest controller input. The plugin's own tiny model
(:mod:`motorpool_world_engine.tiny`) has the same interface and needs no world_engine.
Importing this module is cheap: torch and world_engine are imported in ``motorpool_load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from motorpool import hookimpl
from motorpool.engine import Context, LoadedModel, ResolvedSource, TinyModel
from motorpool.types import Capability, ModelSpec, ProbeReport, SeedFrame, SessionConfig

from motorpool_world_engine import _probe
from motorpool_world_engine._folder import looks_like_world_model, world_folder
from motorpool_world_engine._options import WorldEngineOptions

if TYPE_CHECKING:
    from motorpool_world_engine._engine import WorldModel
    from motorpool_world_engine._session import WorldSession

PLUGIN = "world-engine"
_HUB_NAMES = ("overworld/", "waypoint")
"""Words in a hub repo id that name a world model, for repos not downloaded yet."""


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    return _probe.probe(deep)


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    if path is None:
        name = spec.source.lower()
        return 60 if any(word in name for word in _HUB_NAMES) else None
    return 80 if looks_like_world_model(path) else None


@hookimpl
def motorpool_tiny_model(directory: Path) -> TinyModel | None:
    if not _probe.probe(deep=False).ready:
        return None
    from motorpool_world_engine import tiny  # noqa: PLC0415 - imports torch

    path = tiny.build(directory / "tiny-world")
    return TinyModel(spec=ModelSpec(plugin=PLUGIN, source=str(path)), seed=tiny_seed())


@hookimpl
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    return world_folder(source.path).weights_bytes


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[WorldModel]:
    options = source.options(WorldEngineOptions)
    folder = world_folder(source.path)
    from motorpool_world_engine import _engine  # noqa: PLC0415 - imports torch (and world_engine)

    model = context.load_uninterruptible(folder.path.name, lambda: _engine.load(folder, options))
    return LoadedModel(
        handle=model,
        capabilities=frozenset({Capability.WORLD}),
        memory_bytes=model.memory_bytes,
        exclusive=True,  # one session at a time: the model's context is batch 1
        details=model.details(),
    )


@hookimpl
def motorpool_unload(model: LoadedModel[WorldModel]) -> None:
    model.handle.close()


@hookimpl
def motorpool_open_session(
    model: LoadedModel[WorldModel], config: SessionConfig, seed: SeedFrame, context: Context
) -> WorldSession:
    return model.handle.open_session(config, seed, context)


def tiny_seed() -> SeedFrame:
    """A small PNG for the tiny model's session: a gradient with a bright square."""
    import io  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    y, x = np.mgrid[0:32, 0:48]
    pixels = np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)
    pixels[8:16, 8:16] = 255
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return SeedFrame(image=out.getvalue())
