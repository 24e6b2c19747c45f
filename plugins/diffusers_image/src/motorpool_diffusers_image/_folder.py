"""The pipeline folders this plugin loads: text-to-image ones, never video ones.

:mod:`motorpool.diffusers_folder` reads a folder without importing torch or diffusers;
this module gives it the plugin's hints and refuses video pipelines before they load.
"""

from __future__ import annotations

from pathlib import Path

from motorpool.diffusers_folder import PipelineFolder, read_folder
from motorpool.errors import InvalidModel

VIDEO_PLUGIN_HINT = "load it with the diffusers-video plugin (motorpool-diffusers-video)"
FOLDER_HINT = (
    "a diffusers pipeline is a folder with model_index.json and one folder per component "
    "(for example a snapshot of stabilityai/sdxl-turbo or black-forest-labs/FLUX.1-schnell)"
)


def pipeline_folder(path: Path) -> PipelineFolder:
    """The pipeline folder at ``path``; ``InvalidModel`` if ``path`` is none."""
    return read_folder(path, hint=FOLDER_HINT)


def image_folder(path: Path) -> PipelineFolder:
    """The pipeline folder at ``path``; a video pipeline is refused before anything loads."""
    folder = pipeline_folder(path)
    if folder.is_video:
        raise InvalidModel(
            f"{path.name} is a video pipeline ({folder.class_name}), not a text-to-image one",
            hint=VIDEO_PLUGIN_HINT,
        )
    return folder
