"""An MLX / Hugging Face model folder, read without importing mlx.

The plugin checks the folder before mlx-lm sees it, so a folder without a config, weights
or tokenizer gets a clear error naming what is missing instead of a traceback, and the
memory estimate and ``motorpool_match`` need no engine.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from motorpool.errors import InvalidModel
from pydantic import JsonValue

CONFIG = "config.json"
WEIGHTS_GLOB = "model*.safetensors"
"""The weight files mlx-lm loads (it ignores other names)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
_MODEL_CLASS = "class Model("
_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_FLOAT32_NAMES = frozenset({"float32", "torch.float32"})
_FOLDER_HINT = (
    "an MLX model is a folder with config.json, model*.safetensors and a tokenizer "
    "(for example a snapshot of an mlx-community repository)"
)


@dataclass(frozen=True, slots=True)
class ModelFolder:
    """What the plugin needs from a model folder's ``config.json`` and files."""

    path: Path
    config: dict[str, JsonValue]
    weights: tuple[Path, ...]

    @property
    def model_type(self) -> str:
        """The architecture name mlx-lm picks its module by (``llama``, ``qwen2``...)."""
        value = self.config.get("model_type")
        assert isinstance(value, str)  # read_folder refuses a config without it
        return value

    @property
    def weights_bytes(self) -> int:
        """Bytes of the weight files on disk."""
        return sum(path.stat().st_size for path in self.weights)

    @property
    def quantization(self) -> dict[str, JsonValue] | None:
        """The quantisation the weights were saved with (``bits``, ``group_size``), if any."""
        value = self.config.get("quantization") or self.config.get("quantization_config")
        return value if isinstance(value, dict) else None

    @property
    def context_length(self) -> int | None:
        """Positions the model was trained for (``max_position_embeddings``), if it says."""
        return self._int("max_position_embeddings", "max_sequence_length", "n_positions")

    @property
    def vocab_size(self) -> int | None:
        """Rows of the output layer, if the config says."""
        return self._int("vocab_size")

    @property
    def float32(self) -> bool:
        """Whether the weights are stored in single precision (else half precision)."""
        dtype = self.config.get("torch_dtype") or self.config.get("dtype")
        return isinstance(dtype, str) and dtype in _FLOAT32_NAMES

    def kv_bytes_per_token(self) -> int | None:
        """Bytes of KV cache one token takes (keys and values of every layer)."""
        layers = self._int("num_hidden_layers", "n_layer", "num_layers")
        heads = self._int("num_attention_heads", "n_head")
        if layers is None or heads is None:
            return None
        kv_heads = self._int("num_key_value_heads") or heads
        head_dim = self._int("head_dim")
        if head_dim is None:
            hidden = self._int("hidden_size", "n_embd", "d_model")
            if hidden is None:
                return None
            head_dim = hidden // heads
        element = 4 if self.float32 else 2
        return 2 * layers * kv_heads * head_dim * element

    def _int(self, *keys: str) -> int | None:
        text_config = self.config.get("text_config")
        nested = text_config if isinstance(text_config, dict) else {}
        for key in keys:
            value = self.config.get(key, nested.get(key))
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None


def read_folder(path: Path) -> ModelFolder:
    """Check that ``path`` is a model folder mlx-lm can read; raise ``InvalidModel`` if not."""
    if not path.is_dir():
        raise InvalidModel(f"{path} is a file, not a model folder", hint=_FOLDER_HINT)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise InvalidModel(f"{path} has no {CONFIG}", hint=_FOLDER_HINT + _other_formats(path))
    try:
        config: JsonValue = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{config_file} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidModel(f"{config_file} holds a {type(config).__name__}, not a JSON object")
    if not isinstance(config.get("model_type"), str):
        raise InvalidModel(
            f"{config_file} names no model_type, so the architecture is unknown",
            hint='a transformers model\'s config.json has one (e.g. "model_type": "llama")',
        )
    weights = tuple(sorted(path.glob(WEIGHTS_GLOB)))
    if not weights:
        raise InvalidModel(
            f"{path} has no weights ({WEIGHTS_GLOB})", hint=_FOLDER_HINT + _other_formats(path)
        )
    for weight_file in weights:
        check_safetensors(weight_file)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidModel(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
            hint="copy the tokenizer files of the original model into the folder",
        )
    return ModelFolder(path=path, config=config, weights=weights)


def check_safetensors(path: Path) -> None:
    """Raise ``InvalidModel`` unless ``path`` is a whole safetensors file.

    The header (a little-endian length, then JSON giving each tensor's byte range) tells
    how long the file must be; a shorter file is an interrupted download or copy.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(_LENGTH_BYTES)
        length = int.from_bytes(prefix, "little") if len(prefix) == _LENGTH_BYTES else -1
        if not 0 < length <= min(size - _LENGTH_BYTES, _MAX_HEADER_BYTES):
            raise InvalidModel(f"{path.name} is not a safetensors file (no valid header)")
        try:
            header: JsonValue = json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidModel(f"{path.name} has a damaged safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise InvalidModel(f"{path.name} has a damaged safetensors header")
    ends = [_data_end(entry) for name, entry in header.items() if name != "__metadata__"]
    needed = _LENGTH_BYTES + length + max(ends, default=0)
    if size < needed:
        raise InvalidModel(
            f"{path.name} is cut short: {size} bytes of the {needed} its header describes",
            hint="the download or copy was interrupted: fetch the file again",
        )


def _data_end(entry: JsonValue) -> int:
    """Where a tensor's bytes end after the header (0 when the entry does not say)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if isinstance(offsets, list) and offsets and isinstance(end := offsets[-1], int):
        return end
    return 0


def _other_formats(path: Path) -> str:
    """A hint naming what the folder holds instead, when it is another format."""
    names = [p.name for p in path.iterdir()]
    if any(name.endswith(".gguf") for name in names):
        return "; this folder holds GGUF files: load them with the llama-cpp plugin"
    if any(name.endswith(".safetensors") for name in names):
        return f"; mlx-lm loads weights named {WEIGHTS_GLOB} only"
    if any(name.endswith((".bin", ".pt", ".pth")) for name in names):
        return "; PyTorch weights must be converted first: mlx_lm.convert --hf-path <repo>"
    return ""


@cache
def _models_dir() -> Path | None:
    """mlx-lm's ``models`` package folder, found without importing mlx-lm."""
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def has_architecture(model_type: str) -> bool:
    """Whether mlx-lm has a module named ``model_type`` (a stat, for quick checks)."""
    if not model_type or any(c in model_type for c in "/\\.") or model_type.startswith("_"):
        return False  # not a module name; never a path out of the models folder
    models = _models_dir()
    return models is not None and (models / f"{model_type}.py").is_file()


@cache
def supported_architectures() -> frozenset[str]:
    """Module names of the architectures the installed mlx-lm implements (empty if none).

    Read from mlx-lm's ``models`` folder without importing it: a module that defines a
    ``Model`` class is an architecture; the rest are helpers (``cache``, ``rope_utils``).
    """
    models = _models_dir()
    if models is None:
        return frozenset()
    return frozenset(
        module.stem
        for module in models.glob("*.py")
        if _MODEL_CLASS in module.read_text(encoding="utf-8", errors="replace")
    )


def nearest_architectures(model_type: str, supported: frozenset[str]) -> list[str]:
    """The supported architectures whose names are closest to ``model_type``."""
    return difflib.get_close_matches(model_type, sorted(supported), n=3, cutoff=0.5)
