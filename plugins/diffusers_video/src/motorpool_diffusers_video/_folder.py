"""The pipeline folders this plugin loads: video ones, and the family each belongs to.

:mod:`motorpool.diffusers_folder` reads a folder without importing torch or diffusers;
this module gives it the plugin's hints, refuses image pipelines before they load and
names the family (Wan, LTX-Video, CogVideoX, ...) from the pipeline's class name.
"""

from __future__ import annotations

from pathlib import Path

from motorpool.diffusers_folder import PipelineFolder, read_folder
from motorpool.errors import InvalidModel

IMAGE_PLUGIN_HINT = "load it with the diffusers-image plugin (motorpool-diffusers-image)"
FOLDER_HINT = (
    "a diffusers pipeline is a folder with model_index.json and one folder per component "
    "(for example a snapshot of Wan-AI/Wan2.1-T2V-1.3B-Diffusers or Lightricks/LTX-Video)"
)
FAMILIES = {"Wan": "wan", "LTX": "ltx", "CogVideoX": "cogvideox"}
"""Class-name prefixes of the families this plugin knows by name."""


def pipeline_folder(path: Path) -> PipelineFolder:
    """The pipeline folder at ``path``; ``InvalidModel`` if ``path`` is none."""
    return read_folder(path, hint=FOLDER_HINT)


def video_folder(path: Path) -> PipelineFolder:
    """The pipeline folder at ``path``; an image pipeline is refused before anything loads."""
    folder = pipeline_folder(path)
    if not folder.is_video:
        raise InvalidModel(
            f"{path.name} is an image pipeline ({folder.class_name}), not a video one",
            hint=IMAGE_PLUGIN_HINT,
        )
    return folder


def family_of(folder: PipelineFolder) -> str | None:
    """``wan``, ``ltx`` or ``cogvideox`` from the class name; ``None`` for other families."""
    for prefix, name in FAMILIES.items():
        if folder.class_name.startswith(prefix):
            return name
    return None
