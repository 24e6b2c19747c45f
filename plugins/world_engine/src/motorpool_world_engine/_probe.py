"""What this machine can run, and the install commands that fit it.

The quick probe imports nothing heavy: it finds the packages with ``importlib`` and the
accelerators from files (:func:`motorpool.torchtools.torch_report`). The deep probe
imports torch to list its devices and, on CUDA, each GPU's compute capability and the
quantisations it allows.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from motorpool import torchtools
from motorpool.types import Capability, MissingDependency, ProbeReport

from motorpool_world_engine._options import quant_min_capability

CAPABILITIES = frozenset({Capability.WORLD})
FORMATS = ("world_engine",)
WORLD_ENGINE_INSTALL = (
    'pip install "world_engine @ git+https://github.com/Overworldai/world_engine.git"'
)
LIBRARIES = {
    "numpy": "numpy",
    "pillow": "PIL",
    "safetensors": "safetensors",
    "imageio-ffmpeg": "imageio_ffmpeg",
}
QUANTS = ("intw8a8", "fp8w8a8", "nvfp4")


def world_engine_installed() -> bool:
    """Whether world_engine can be imported (found, not imported: it sets torch globals)."""
    return importlib.util.find_spec("world_engine") is not None


def missing() -> list[MissingDependency]:
    """What the plugin needs and lacks; world_engine is listed but is not required."""
    torch = torchtools.missing_torch()
    found = [] if torch is None else [torch]
    found.extend(
        MissingDependency(
            package=name, install=f"pip install {name}", reason="frames, recordings, weights"
        )
        for name, module in LIBRARIES.items()
        if importlib.util.find_spec(module) is None
    )
    return found


def probe(deep: bool) -> ProbeReport:
    """The plugin's report; ready when the plugin's own tiny model can run."""
    absent = missing()
    engine = [] if world_engine_installed() else [_world_engine_missing()]
    if absent:
        return ProbeReport(
            ready=False,
            capabilities=CAPABILITIES,
            formats=FORMATS,
            missing=(*absent, *engine),
        )
    torch = torchtools.torch_report(deep)
    notes = list(torch.notes)
    if engine:
        notes.append("without world_engine only the self-check model loads")
    if deep:
        notes.extend(_gpu_notes())
    return ProbeReport(
        ready=True,
        capabilities=CAPABILITIES,
        formats=FORMATS,
        devices=torch.devices,
        missing=tuple(engine),
        engine_version=_version(),
        notes=tuple(notes),
    )


def _world_engine_missing() -> MissingDependency:
    return MissingDependency(
        package="world_engine",
        install=WORLD_ENGINE_INSTALL,
        reason="Overworld's world models (GPL-3.0, not on PyPI); the tiny self-check model "
        "runs without it",
    )


def _version() -> str | None:
    try:
        return importlib.metadata.version("world_engine")
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_notes() -> list[str]:
    """Each CUDA GPU's compute capability and the quantisations it can run."""
    import torch  # noqa: PLC0415 - the deep probe may import torch

    notes: list[str] = []
    if not torch.cuda.is_available():
        return ["no CUDA GPU: world_engine's models are built for CUDA; quantisation needs one"]
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        allowed = [q for q in QUANTS if (major, minor) >= quant_min_capability(q)]
        notes.append(
            f"cuda:{index} {torch.cuda.get_device_name(index)} (compute {major}.{minor}): "
            f"quant {', '.join(allowed) if allowed else 'none (bfloat16/float16 only)'}"
        )
    return notes
