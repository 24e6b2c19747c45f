"""Bad folders, options and requests: typed errors with a hint, and a host that carries on.

Each broken folder is a copy of a tiny pipeline with one thing wrong, loaded through the
real host, so what is checked is what a user sees.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from motorpool import Host
from motorpool.errors import InvalidModel, InvalidOptions, InvalidRequest
from motorpool.types import ImageRequest, ImageResult, ModelSpec
from pydantic import ValidationError

from .conftest import PLUGIN

Breaker = Callable[[Path], Path]


def a_file(folder: Path) -> Path:
    return folder / "model_index.json"


def a_checkpoint_file(folder: Path) -> Path:
    return folder / "unet" / "diffusion_pytorch_model.safetensors"


def no_model_index(folder: Path) -> Path:
    (folder / "model_index.json").unlink()
    return folder


def one_component(folder: Path) -> Path:
    return folder / "unet"


def a_transformers_model(folder: Path) -> Path:
    return folder / "text_encoder"


def gguf_files(folder: Path) -> Path:
    (folder / "model_index.json").rename(folder / "model-q4_k_m.gguf")
    return folder


def index_not_json(folder: Path) -> Path:
    (folder / "model_index.json").write_text("{ not json", encoding="utf-8")
    return folder


def index_without_class(folder: Path) -> Path:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    del index["_class_name"]
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def unknown_pipeline(folder: Path) -> Path:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["_class_name"] = "StableDiffusion9Pipeline"
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def an_upscaler(folder: Path) -> Path:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["_class_name"] = "StableDiffusionUpscalePipeline"
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def missing_component(folder: Path) -> Path:
    shutil.rmtree(folder / "vae")
    return folder


def missing_weights(folder: Path) -> Path:
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    return folder


def mismatched_weights(folder: Path) -> Path:
    config_file = folder / "unet" / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["block_out_channels"] = [64, 128]
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("breaker", "message", "hint"),
    [
        (a_file, "is a file, not a diffusers pipeline folder", "model_index.json"),
        (a_checkpoint_file, "is a file", "single-file checkpoints"),
        (no_model_index, "has no model_index.json", "one folder per component"),
        (one_component, "has no model_index.json", "one component (UNet2DConditionModel)"),
        (a_transformers_model, "has no model_index.json", "a transformers model"),
        (gguf_files, "has no model_index.json", "llama-cpp plugin"),
        (index_not_json, "not valid JSON", None),
        (index_without_class, "names no pipeline class", "model_index.json"),
        (unknown_pipeline, "has no pipeline 'StableDiffusion9Pipeline'", "upgrade diffusers"),
        (an_upscaler, "not a text-to-image pipeline: it needs image", "text-to-image"),
        (missing_component, "lacks the folder of vae", "incomplete"),
        (missing_weights, "could not load", "complete pipeline"),
        (mismatched_weights, "could not load", "complete pipeline"),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_bad_folder_is_invalid_model(
    host: Host,
    sd: str,
    sd_folder: Path,
    tmp_path: Path,
    *,
    breaker: Breaker,
    message: str,
    hint: str | None,
) -> None:
    source = breaker(Path(shutil.copytree(sd_folder, tmp_path / "copy")))
    with pytest.raises(InvalidModel, match=message) as raised:
        host.load(ModelSpec(name="broken", plugin=PLUGIN, source=str(source)))
    assert raised.value.status == 422
    if hint is not None:
        assert raised.value.hint is not None
        assert hint in raised.value.hint
    assert "broken" not in {model.id for model in host.models()}  # a client error
    assert isinstance(host.generate(sd, ImageRequest(prompt="a cat", steps=1)), ImageResult)


def test_video_pipeline_is_refused(host: Host, wan_folder: Path) -> None:
    with pytest.raises(InvalidModel, match="is a video pipeline \\(WanPipeline\\)") as raised:
        host.load(ModelSpec(name="wan", plugin=PLUGIN, source=str(wan_folder)))
    assert raised.value.hint is not None
    assert "diffusers-video" in raised.value.hint


@pytest.mark.parametrize(
    ("name", "video"),
    [
        ("WanPipeline", True),
        ("CogVideoXPipeline", True),
        ("LTXImageToVideoPipeline", True),
        ("StableDiffusionPipeline", False),
        ("StableDiffusionXLPipeline", False),
        ("FluxPipeline", False),
        ("StableDiffusion3Pipeline", False),
    ],
)
def test_load_knows_video_pipelines_by_diffusers_own_tables(name: str, video: bool) -> None:
    """The second check, at load: diffusers' video task tables and a num_frames argument."""
    from motorpool_diffusers_image import _pipelines  # noqa: PLC0415 - imports diffusers

    cls = _pipelines.pipeline_class(name)
    assert cls is not None
    assert _pipelines.makes_video(cls) is video


@pytest.mark.parametrize(
    ("model", "width", "height", "message", "hint"),
    [
        ("sd", 60, 64, "width 60 is not a multiple of 8", "use 56 or 64"),
        ("sd", 64, 100, "height 100 is not a multiple of 8", "use 96 or 104"),
        ("flux", 30, 32, "width 30 is not a multiple of 4", "use 28 or 32"),
    ],
)
def test_size_not_a_multiple(
    host: Host,
    sd: str,
    flux: str,
    *,
    model: str,
    width: int,
    height: int,
    message: str,
    hint: str,
) -> None:
    request = ImageRequest(prompt="a cat", width=width, height=height, steps=1)
    with pytest.raises(InvalidRequest, match=message) as raised:
        host.generate(sd if model == "sd" else flux, request)
    assert raised.value.hint == hint
    assert raised.value.status == 422


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 1000}, "steps"),
        ({"guidance": math.nan}, "guidance"),
        ({"guidance": math.inf}, "guidance"),
        ({"prompt": ""}, "prompt"),
        ({"width": 0}, "width"),
        ({"strength": 0.5}, "strength applies to image-to-image"),
    ],
)
def test_out_of_range_requests_are_refused_before_the_engine(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ImageRequest.model_validate({"prompt": "a cat", **fields})


def test_bad_init_image(host: Host, sd: str) -> None:
    request = ImageRequest(prompt="a cat", steps=2, init_image=b"not an image", strength=0.5)
    with pytest.raises(InvalidRequest, match="not an image") as raised:
        host.generate(sd, request)
    assert raised.value.hint == "send PNG or JPEG bytes"


def test_strength_too_low_for_the_steps(host: Host, sd: str) -> None:
    base = host.generate(sd, ImageRequest(prompt="a cat", steps=1, seed=1))
    assert isinstance(base, ImageResult)
    request = ImageRequest(prompt="a cat", steps=2, init_image=base.images[0].png, strength=0.2)
    with pytest.raises(InvalidRequest, match="leave no denoising step") as raised:
        host.generate(sd, request)
    assert raised.value.hint == "use at least 5 steps, or a higher strength"


@pytest.mark.parametrize(
    ("options", "message", "hint"),
    [
        ({"device": "gpu"}, "device: String should match pattern", "accepted options"),
        ({"dtype": "int8"}, "dtype: Input should be", "accepted options"),
        ({"device": "cuda"}, "device cuda is not available", "install a CUDA build"),
        ({"device": "mps"}, "device mps is not available", 'use device = "auto" or "cpu"'),
        ({"scheduler": "FastestScheduler"}, "has no such scheduler", "DPMSolverMultistep"),
        ({"scheduler": "not a class"}, "scheduler: String should match pattern", None),
        (
            {"scheduler": "FlowMatchEulerDiscreteScheduler"},
            "does not fit this pipeline",
            "EulerAncestralDiscreteScheduler",
        ),
        ({"variant": "fp16"}, "variant 'fp16'", "leave variant out"),
        ({"png_compress_level": 10}, "png_compress_level", None),
        ({"num_inference_steps": 4}, "Extra inputs are not permitted", "attention_slicing"),
    ],
)
def test_bad_options_are_invalid_options(
    host: Host,
    sd_folder: Path,
    *,
    options: dict[str, object],
    message: str,
    hint: str | None,
) -> None:
    spec = ModelSpec(name="bad-options", plugin=PLUGIN, source=str(sd_folder), options=options)
    with pytest.raises(InvalidOptions, match=message) as raised:
        host.load(spec)
    assert raised.value.status == 422
    if hint is not None:
        assert raised.value.hint is not None
        assert hint in raised.value.hint
    assert "bad-options" not in {model.id for model in host.models()}


def test_variant_files_are_found(host: Host, sd_folder: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(sd_folder, tmp_path / "variant"))
    for weights in copy.rglob("*.safetensors"):
        weights.rename(weights.with_name(f"{weights.stem}.fp16.safetensors"))
    spec = ModelSpec(name="fp16", plugin=PLUGIN, source=str(copy), options={"variant": "fp16"})
    info = host.load(spec)
    assert info.details["variant"] == "fp16"
    host.unload("fp16")
    with pytest.raises(InvalidOptions, match="variant 'bf16'") as raised:
        host.load(spec.model_copy(update={"options": {"variant": "bf16"}}))
    assert raised.value.hint == "variants found: fp16"
