"""A loaded world model: the adapter, its warm-up, and the sessions opened on it.

Imports torch (and world_engine for real models): the plugin imports this module in
``motorpool_load`` only.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import torch
from motorpool import torchtools
from motorpool.engine import Context
from motorpool.errors import InvalidOptions, PluginUnavailable
from motorpool.types import SeedFrame, SessionConfig
from PIL import Image, ImageOps
from pydantic import JsonValue

from motorpool_world_engine import tiny
from motorpool_world_engine._adapter import Engine, WorldAdapter
from motorpool_world_engine._folder import WorldFolder
from motorpool_world_engine._options import WorldEngineOptions, quant_min_capability
from motorpool_world_engine._probe import WORLD_ENGINE_INSTALL
from motorpool_world_engine._session import WorldSession

if TYPE_CHECKING:
    from numpy.typing import NDArray


class ModuleLike(Protocol):
    """The ``world_engine`` package as the plugin uses it."""

    WorldEngine: Callable[..., Engine]
    CtrlInput: Callable[..., object]


class WorldModel:
    """A world model loaded on its device, ready to open sessions (one at a time)."""

    def __init__(self, adapter: WorldAdapter, folder: WorldFolder, dtype: torch.dtype) -> None:
        self.adapter = adapter
        self.folder = folder
        self.dtype = dtype
        self.memory_bytes = int(folder.weights_bytes * (4 if dtype == torch.float32 else 2) / 2)
        self._warm = threading.Lock()

    def open_session(
        self, config: SessionConfig, seed: SeedFrame, context: Context
    ) -> WorldSession:
        """A session from ``seed``; the first one warms the model up (``warmup`` progress)."""
        with self._warm:
            if self.adapter.frame_shape is None:
                context.progress("warmup", 0, 1)
                seconds = self.adapter.warm_up()
                context.log.info("warmed up", seconds=round(seconds, 3))
                context.progress("warmup", 1, 1)
        context.raise_if_cancelled()
        shape = self.adapter.frame_shape
        assert shape is not None
        return WorldSession(self.adapter, config, fit_seed(seed, shape[2], shape[1]), context)

    def details(self) -> dict[str, JsonValue]:
        """What ``motorpool ps`` and the model's info show."""
        adapter = self.adapter
        return {
            "backend": "tiny" if self.folder.tiny else "world_engine",
            "model_type": adapter.model_type,
            "device": adapter.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "n_frames": adapter.n_frames,
            "temporal_compression": adapter.temporal_compression,
            "inference_fps": adapter.inference_fps,
            "prompt_conditioning": adapter.prompt_conditioning,
        }

    def close(self) -> None:
        """Stop the device thread and free the device's memory."""
        self.adapter.close()
        torchtools.release_memory(self.adapter.device)


def load(folder: WorldFolder, options: WorldEngineOptions) -> WorldModel:
    """Build the engine on its device thread: the tiny model, or world_engine's."""
    device = torchtools.resolve_device(options.device)
    overrides = dict(options.config_overrides) or None
    make_control: Callable[..., object]
    if folder.tiny:
        _check_tiny_options(options)
        dtype = torchtools.resolve_dtype(options.dtype, device)

        def build() -> Engine:
            return tiny.WorldEngine(str(folder.path), options.quant, overrides, device, dtype)

        make_control = tiny.CtrlInput
    else:
        world_engine = _import_world_engine()
        _check_quant(options.quant, device, getattr(world_engine, "QUANTS", None))
        # world_engine runs in bfloat16 (1.0's inference patches expect it), also on the CPU.
        dtype = torchtools.resolve_dtype(
            "bfloat16" if options.dtype == "auto" and _bf16(device) else options.dtype, device
        )

        def build() -> Engine:
            engine: Engine = world_engine.WorldEngine(
                str(folder.path.resolve()),  # absolute: a relative one is tried as a hub id
                quant=options.quant,
                model_config_overrides=overrides,
                device=device,
                dtype=dtype,
            )
            return engine

        make_control = world_engine.CtrlInput
    return WorldModel(WorldAdapter(build, make_control, device), folder, dtype)


def fit_seed(seed: SeedFrame, width: int, height: int) -> NDArray[np.uint8]:
    """The seed image as a ``[H, W, 3]`` frame: scaled to cover the frame, centre cropped."""
    image = torchtools.decode_image(seed.image, "the seed image")
    if image.size != (width, height):
        image = ImageOps.fit(image, (width, height), Image.Resampling.BICUBIC)
    return np.array(image, dtype=np.uint8)  # a writable copy: torch takes it as is


def _import_world_engine() -> ModuleLike:
    try:
        import world_engine  # noqa: PLC0415 # pyright: ignore[reportMissingImports] - optional, GPL, from git
    except ImportError as exc:
        raise PluginUnavailable(
            f"world_engine is not installed ({exc})",
            hint=f"{WORLD_ENGINE_INSTALL}  (GPL-3.0; see the plugin's README)",
        ) from exc
    return cast("ModuleLike", world_engine)


def _bf16(device: str) -> bool:
    return not device.startswith("cuda") or torch.cuda.is_bf16_supported()


def _check_tiny_options(options: WorldEngineOptions) -> None:
    """The tiny model's refusals as typed errors, not a ``ValueError`` from its constructor."""
    if options.quant is not None:
        raise InvalidOptions(
            f"the tiny world model has no quantisation ({options.quant})",
            hint="leave quant out: quantisation is for world_engine's models on CUDA",
        )
    known = {field.name for field in dataclasses.fields(tiny.TinyWorldConfig)}
    unknown = sorted(set(options.config_overrides) - known)
    if unknown:
        raise InvalidOptions(
            f"config_overrides names keys the tiny world model lacks: {unknown}",
            hint=f"its keys: {sorted(known)}",
        )


def _check_quant(quant: str | None, device: str, known: object) -> None:
    if quant is None:
        return
    if isinstance(known, list | tuple) and quant not in known:
        names = sorted(str(q) for q in cast("list[object]", known) if q is not None)
        raise InvalidOptions(
            f"world_engine has no quantisation {quant!r}",
            hint=f"use one of {names}" if names else "this world_engine build has none",
        )
    if not device.startswith("cuda"):
        raise InvalidOptions(f"quant {quant} needs a CUDA GPU; the model is on {device}")
    needed = quant_min_capability(quant)
    have = torch.cuda.get_device_capability(device)
    if have < needed:
        raise InvalidOptions(
            f"quant {quant} needs compute capability {needed[0]}.{needed[1]}; "
            f"{torch.cuda.get_device_name(device)} has {have[0]}.{have[1]}",
            hint="leave quant out (bfloat16), or pick one the probe lists for this GPU",
        )
