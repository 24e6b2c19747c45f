"""A diffusers pipeline folder, read without importing torch or diffusers.

``model_index.json`` names the pipeline class and its components; the class name says
the family (Wan, LTX-Video, CogVideoX, ...). The safetensors headers give every tensor's
dtype and shape, enough to estimate memory before loading.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from motorpool.errors import InvalidModel
from pydantic import JsonValue

MODEL_INDEX = "model_index.json"
IMAGE_PLUGIN_HINT = "load it with the diffusers-image plugin (motorpool-diffusers-image)"
FOLDER_HINT = (
    "a diffusers pipeline is a folder with model_index.json and one folder per component "
    "(for example a snapshot of Wan-AI/Wan2.1-T2V-1.3B-Diffusers or Lightricks/LTX-Video)"
)
FAMILIES = {"Wan": "wan", "LTX": "ltx", "CogVideoX": "cogvideox"}
"""Class-name prefixes of the families this plugin knows by name."""
# Pipelines and components that make videos: diffusers names them after the model family.
_VIDEO_PIPELINE = re.compile(
    r"Video|^Wan|^LTX|^CogVideoX|^Mochi|^AnimateDiff|^Allegro|^Latte|^SkyReels|^HunyuanVideo"
)
_VIDEO_COMPONENT = re.compile(r"3D|Video|Temporal|Motion|^AutoencoderKL(Wan|LTX|Mochi|Allegro)")
_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_FLOATS = frozenset({"F64", "F32", "F16", "BF16"})
_ELEMENT_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2}
"""Bytes per element of the stored dtypes (others: 1)."""


@dataclass(frozen=True, slots=True)
class PipelineFolder:
    """What the plugin needs from a pipeline folder."""

    path: Path
    class_name: str
    components: tuple[tuple[str, str], ...]
    """``(name, class)`` of every component."""

    @property
    def family(self) -> str | None:
        """``wan``, ``ltx`` or ``cogvideox`` from the class name; ``None`` for other families."""
        for prefix, family in FAMILIES.items():
            if self.class_name.startswith(prefix):
                return family
        return None

    @property
    def is_video(self) -> bool:
        """Whether the pipeline (or one of its models) makes videos, judged by class names."""
        return _VIDEO_PIPELINE.search(self.class_name) is not None or any(
            _VIDEO_COMPONENT.search(cls) for _, cls in self.components
        )

    def weights_bytes(self, dtype_bytes: int) -> int:
        """Bytes the weights take once loaded with ``dtype_bytes`` per floating-point value."""
        total = 0
        for name, _ in self.components:
            folder = self.path / name
            files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
            total += sum(_loaded_bytes(path, dtype_bytes) for path in files)
        return total


def read_folder(path: Path) -> PipelineFolder:
    """Check that ``path`` is a diffusers pipeline folder; raise ``InvalidModel`` if not."""
    if not path.is_dir():
        raise InvalidModel(f"{path} is a file, not a diffusers pipeline folder", hint=FOLDER_HINT)
    index_file = path / MODEL_INDEX
    if not index_file.is_file():
        raise InvalidModel(
            f"{path} is not a diffusers pipeline: it has no {MODEL_INDEX}", hint=FOLDER_HINT
        )
    try:
        index: JsonValue = json.loads(index_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{index_file} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise InvalidModel(f"{index_file} names no pipeline class (_class_name)", hint=FOLDER_HINT)
    components: list[tuple[str, str]] = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:  # noqa: PLR2004
            continue
        library, cls = entry
        if isinstance(library, str) and isinstance(cls, str):
            components.append((name, cls))
    class_name = str(index["_class_name"])
    missing = [name for name, _ in components if not (path / name).is_dir()]
    if missing:
        raise InvalidModel(
            f"{path.name} ({class_name}) lacks the folder of {', '.join(missing)}",
            hint="the download or copy is incomplete: fetch the whole pipeline again",
        )
    return PipelineFolder(path=path, class_name=class_name, components=tuple(components))


def video_folder(path: Path) -> PipelineFolder:
    """The pipeline folder at ``path``; an image pipeline is refused before anything loads."""
    folder = read_folder(path)
    if not folder.is_video:
        raise InvalidModel(
            f"{path.name} is an image pipeline ({folder.class_name}), not a video one",
            hint=IMAGE_PLUGIN_HINT,
        )
    return folder


def _loaded_bytes(path: Path, dtype_bytes: int) -> int:
    """Bytes of a weight file's tensors in memory: floats at ``dtype_bytes``, others as stored.

    A file whose header cannot be read (``.bin`` pickles, damaged files) counts its size.
    """
    size = path.stat().st_size
    if path.suffix != ".safetensors":
        return size
    with path.open("rb") as file:
        prefix = file.read(_LENGTH_BYTES)
        length = int.from_bytes(prefix, "little") if len(prefix) == _LENGTH_BYTES else -1
        if not 0 < length <= min(size - _LENGTH_BYTES, _MAX_HEADER_BYTES):
            return size
        try:
            header: JsonValue = json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return size
    if not isinstance(header, dict):
        return size
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if not isinstance(dtype, str) or not isinstance(shape, list):
            return size
        count = math.prod(d for d in shape if isinstance(d, int))
        total += count * (dtype_bytes if dtype in _FLOATS else _ELEMENT_BYTES.get(dtype, 1))
    return total
