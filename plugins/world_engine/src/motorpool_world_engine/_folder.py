"""A world model folder, checked without importing torch or world_engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from motorpool.errors import InvalidModel

TINY_CONFIG = "motorpool-tiny-world.json"
"""The config file of the plugin's own tiny world model (tests, ``motorpool check``)."""
CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
_WORLD_KEYS = ("n_frames", "n_buttons", "tokens_per_frame")
"""Keys of a world_engine config.yaml: a folder whose config has none is another model."""


@dataclass(frozen=True, slots=True)
class WorldFolder:
    """A folder holding a world model: world_engine's, or the plugin's tiny one."""

    path: Path
    tiny: bool

    @property
    def weights_bytes(self) -> int:
        """The size of the weights on disk."""
        return sum(p.stat().st_size for p in self.path.glob("*.safetensors"))


def looks_like_world_model(path: Path) -> bool:
    """Whether ``path`` is a world model folder (for matching a source to this plugin)."""
    if (path / TINY_CONFIG).is_file():
        return True
    config = path / CONFIG
    if not config.is_file():
        return False
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f"{key}:" in text for key in _WORLD_KEYS)


def world_folder(path: Path) -> WorldFolder:
    """The model folder at ``path``, or ``InvalidModel`` saying what is missing."""
    if not path.is_dir():
        raise InvalidModel(
            f"{path} is not a folder",
            hint=f"a world model is a folder with {CONFIG} and {WEIGHTS} (or a hub repo id)",
        )
    tiny = (path / TINY_CONFIG).is_file()
    if not tiny and not (path / CONFIG).is_file():
        raise InvalidModel(
            f"{path} has no {CONFIG}",
            hint=f"a world_engine model folder holds {CONFIG} and {WEIGHTS}",
        )
    if not (path / WEIGHTS).is_file():
        raise InvalidModel(
            f"{path} has no {WEIGHTS}", hint="download the model again, or check the folder"
        )
    return WorldFolder(path=path, tiny=tiny)
