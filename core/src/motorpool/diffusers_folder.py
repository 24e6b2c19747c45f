"""A diffusers pipeline folder, read without importing torch or diffusers.

``model_index.json`` names the pipeline class and its components; each component with
weights has a folder of ``*.safetensors`` files whose headers give every tensor's dtype
and shape. That is enough for a plugin that loads diffusers pipelines to refuse what is
not a pipeline folder (a single checkpoint file, one component's folder) with a clear
error, to tell video pipelines from image ones (:attr:`PipelineFolder.is_video`, the one
rule the image and video plugins share), to claim sources in ``motorpool_match`` and to
estimate memory before loading.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue

from motorpool.errors import InvalidModel, InvalidOptions

MODEL_INDEX = "model_index.json"
_SINGLE_FILE_HINT = (
    "single-file checkpoints are not loaded by this plugin; give the diffusers folder of the "
    "same model (or convert it with diffusers' from_single_file and save_pretrained)"
)
# Pipelines and components that make videos: diffusers names them after the model family.
_VIDEO_PIPELINE = re.compile(
    r"Video|^Wan|^LTX|^Mochi|^AnimateDiff|^Allegro|^Latte|^SkyReels|^I2VGen|^Cosmos|"
    r"^ConsisID|^EasyAnimate|^Kandinsky5T2V|^PIA|^Lucy"
)
_VIDEO_COMPONENT = re.compile(r"3D|Video|Temporal|Motion|^AutoencoderKL(Wan|LTX|Mochi|Allegro)")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")
_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_ELEMENT_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_FLOATS = frozenset({"F64", "F32", "F16", "BF16"})
"""Stored dtypes that loading casts to the chosen dtype (quantised ones stay as they are)."""


@dataclass(frozen=True, slots=True)
class Component:
    """One entry of ``model_index.json``: a name, its library and its class."""

    name: str
    library: str
    class_name: str


@dataclass(frozen=True, slots=True)
class PipelineFolder:
    """What a plugin needs from a pipeline folder."""

    path: Path
    class_name: str
    components: tuple[Component, ...]

    @property
    def is_video(self) -> bool:
        """Whether the pipeline (or one of its models) makes videos, judged by class names."""
        return _VIDEO_PIPELINE.search(self.class_name) is not None or any(
            _VIDEO_COMPONENT.search(component.class_name) for component in self.components
        )

    def weight_files(self, component: Component, variant: str | None) -> list[Path]:
        """The weight files of a component that a load with ``variant`` reads.

        safetensors files when there are any (diffusers prefers them), else ``.bin`` files.
        """
        folder = self.path / component.name
        if not folder.is_dir():
            return []
        files = [p for p in folder.iterdir() if _variant_of(p) == variant]
        safetensors = [p for p in files if p.suffix == ".safetensors"]
        return sorted(safetensors or [p for p in files if p.suffix == ".bin"])

    def check_variant(self, variant: str) -> None:
        """Raise ``InvalidOptions`` unless every component with weights has that variant."""
        lacking = [
            component.name
            for component in self.components
            if (self.weight_files(component, None) or self.variants(component))
            and not self.weight_files(component, variant)
        ]
        if lacking:
            found = sorted({v for component in self.components for v in self.variants(component)})
            raise InvalidOptions(
                f"variant {variant!r}: {', '.join(lacking)} of {self.path.name} have no "
                f"weights of that variant",
                hint=f"variants found: {', '.join(found)}" if found else "leave variant out",
            )

    def weights_bytes(self, dtype_bytes: int, variant: str | None = None) -> int:
        """Bytes the weights take once loaded with ``dtype_bytes`` per floating-point value."""
        total = 0
        for component in self.components:
            files = self.weight_files(component, variant)
            if not files and variant is None:  # only variant files: diffusers loads one
                files = self.weight_files(component, next(iter(self.variants(component)), None))
            total += sum(_loaded_bytes(path, dtype_bytes) for path in files)
        return total

    def variants(self, component: Component) -> list[str]:
        """The variants a component's weight files come in (``fp16``, ...), sorted."""
        folder = self.path / component.name
        found = {_variant_of(p) for p in folder.glob("*") if p.suffix in {".safetensors", ".bin"}}
        return sorted(v for v in found if v is not None)


def read_folder(path: Path, *, hint: str) -> PipelineFolder:
    """Check that ``path`` is a diffusers pipeline folder; raise ``InvalidModel`` if not.

    ``hint`` says what a pipeline folder is, with the plugin's examples; errors whose
    cause the folder shows (a single checkpoint file, one component's folder...) say that
    instead.
    """
    if not path.is_dir():
        single_file = path.suffix in {".safetensors", ".ckpt", ".gguf"}
        raise InvalidModel(
            f"{path} is a file, not a diffusers pipeline folder",
            hint=_SINGLE_FILE_HINT if single_file else hint,
        )
    index_file = path / MODEL_INDEX
    if not index_file.is_file():
        raise InvalidModel(
            f"{path} is not a diffusers pipeline: it has no {MODEL_INDEX}",
            hint=_other_formats(path) or hint,
        )
    try:
        index: JsonValue = json.loads(index_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{index_file} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise InvalidModel(f"{index_file} names no pipeline class (_class_name)", hint=hint)
    class_name = str(index["_class_name"])
    components: list[Component] = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:  # noqa: PLR2004
            continue
        library, component_class = entry
        if isinstance(library, str) and isinstance(component_class, str):
            components.append(Component(name, library, component_class))
    missing = [c.name for c in components if not (path / c.name).is_dir()]
    if missing:
        raise InvalidModel(
            f"{path.name} ({class_name}) lacks the folder of {', '.join(missing)}",
            hint="the download or copy is incomplete: fetch the whole pipeline again",
        )
    return PipelineFolder(path=path, class_name=class_name, components=tuple(components))


def _variant_of(path: Path) -> str | None:
    """``fp16`` for ``model.fp16.safetensors`` (and its shards), ``None`` for ``model.bin``."""
    stem = _SHARD.sub("", path.name.removesuffix(path.suffix))
    return stem.rpartition(".")[2] if "." in stem else None


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


def _other_formats(path: Path) -> str | None:
    """A hint naming what the folder holds instead of a pipeline, if it tells."""
    config = path / "config.json"
    if config.is_file():
        try:
            fields: JsonValue = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            fields = None
        if isinstance(fields, dict) and isinstance(fields.get("_class_name"), str):
            return (
                f"this folder holds one component ({fields['_class_name']}) of a pipeline; "
                f"give the pipeline folder above it, the one with {MODEL_INDEX}"
            )
        if isinstance(fields, dict) and "model_type" in fields:
            return "this folder holds a transformers model, not a diffusers pipeline"
    if any(path.glob("*.gguf")):
        return "this folder holds GGUF files: load them with the llama-cpp plugin"
    return None


def match_score(
    source: str, path: Path | None, *, hub_words: tuple[str, ...], video: bool
) -> int | None:
    """A ``motorpool_match`` score for a plugin that loads image (or ``video``) pipelines.

    80 for a pipeline folder of that kind, 50 for a hub repo id not downloaded yet that
    holds one of ``hub_words`` (lowercase), ``None`` for anything else.
    """
    if path is None:
        name = source.lower()
        return 50 if any(word in name for word in hub_words) else None
    if not (path / MODEL_INDEX).is_file():
        return None
    try:
        folder = read_folder(path, hint="")
    except InvalidModel:
        return None
    return 80 if folder.is_video == video else None
