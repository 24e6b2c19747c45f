"""What this machine can run, and the install command that fits it.

The quick probe never imports torch, diffusers or imageio: it finds the packages with
``importlib``, reads the torch build from its version (``2.x.y+cpu`` is a CPU build)
and the accelerators from files (:func:`motorpool.torchtools.torch_report`). The deep
probe imports torch to list its devices.
"""

from __future__ import annotations

import importlib.util

from motorpool import torchtools
from motorpool.types import Capability, MissingDependency, ProbeReport

CAPABILITIES = frozenset({Capability.VIDEO, Capability.IMAGE_TO_VIDEO})
FORMATS = ("diffusers",)
LIBRARIES = {
    "diffusers": "diffusers",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "imageio": "imageio",
    "imageio-ffmpeg": "imageio_ffmpeg",
}
"""The packages beside torch: distribution name to import name."""
LIBRARIES_INSTALL = (
    "pip install diffusers transformers accelerate safetensors imageio imageio-ffmpeg"
)


def missing() -> list[MissingDependency]:
    """The packages this plugin needs that are not installed, with their install commands."""
    torch = torchtools.missing_torch()
    found = [] if torch is None else [torch]
    found.extend(
        MissingDependency(
            package=name,
            install=LIBRARIES_INSTALL,
            reason="MP4 encoding" if name.startswith("imageio") else "Hugging Face's stack",
        )
        for name, module in LIBRARIES.items()
        if importlib.util.find_spec(module) is None
    )
    return found


def probe(deep: bool) -> ProbeReport:
    """The plugin's probe report; ``deep`` imports torch to ask it for its devices."""
    return torchtools.torch_probe(
        deep, capabilities=CAPABILITIES, formats=FORMATS, missing=missing(), engine="diffusers"
    )
