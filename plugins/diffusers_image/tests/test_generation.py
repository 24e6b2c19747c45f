"""Generation on the tiny pipelines: diffusers' own pixels, seeds, progress, cancel, img2img."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from motorpool import Host
from motorpool.engine import Context, ResolvedSource
from motorpool.errors import Cancelled
from motorpool.types import (
    ErrorEvent,
    ImageRequest,
    ImageResult,
    ModelOrigin,
    ModelSpec,
    ProgressEvent,
    ResultEvent,
)
from motorpool_diffusers_image import plugin
from motorpool_diffusers_image.tiny import build_stable_diffusion
from numpy.typing import NDArray
from PIL import Image

from .conftest import PLUGIN


def pixels(png: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def image_of(host: Host, model: str, request: ImageRequest) -> ImageResult:
    result = host.generate(model, request)
    assert isinstance(result, ImageResult)
    return result


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_same_pixels_as_a_direct_pipeline_call(
    host: Host, sd: str, flux: str, sd_folder: Path, flux_folder: Path, *, family: str
) -> None:
    model, folder = (sd, sd_folder) if family == "sd" else (flux, flux_folder)
    request = ImageRequest(prompt="a red cat on the sea", width=64, height=64, steps=3, seed=7)
    ours = pixels(image_of(host, model, request).images[0].png)
    pipeline = DiffusionPipeline.from_pretrained(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    direct = pipeline(
        prompt=request.prompt,
        width=64,
        height=64,
        num_inference_steps=3,
        generator=[torch.Generator("cpu").manual_seed(7)],
    ).images[0]
    assert np.array_equal(ours, np.asarray(direct))


def test_a_seed_gives_the_same_image(host: Host, sd: str) -> None:
    request = ImageRequest(prompt="a blue square", width=64, height=64, steps=2, seed=11)
    first, again = image_of(host, sd, request), image_of(host, sd, request)
    assert first.images[0].png == again.images[0].png
    assert first.images[0].seed == 11
    other = image_of(host, sd, request.model_copy(update={"seed": 12}))
    assert not np.array_equal(pixels(other.images[0].png), pixels(first.images[0].png))


def test_without_a_seed_each_image_gets_its_own(host: Host, flux: str) -> None:
    request = ImageRequest(prompt="a blue square", width=32, height=32, steps=1)
    first, second = image_of(host, flux, request), image_of(host, flux, request)
    assert first.images[0].seed != second.images[0].seed
    replay = image_of(host, flux, request.model_copy(update={"seed": first.images[0].seed}))
    assert replay.images[0].png == first.images[0].png


def test_count_gives_consecutive_seeds(host: Host, sd: str) -> None:
    request = ImageRequest(prompt="a green circle", width=64, height=64, steps=2, seed=3, count=2)
    batch = image_of(host, sd, request)
    assert [image.seed for image in batch.images] == [3, 4]
    alone = image_of(host, sd, request.model_copy(update={"count": 1, "seed": 4}))
    # A batch of two runs the same maths as two single images, up to float rounding.
    difference = np.abs(
        pixels(batch.images[1].png).astype(int) - pixels(alone.images[0].png).astype(int)
    )
    assert difference.max() <= 2


def test_png_carries_the_parameters_and_result_the_timings(host: Host, sd: str) -> None:
    request = ImageRequest(
        prompt="a red cat ☀", negative_prompt="a dog", width=64, height=64, steps=2, seed=5
    )
    result = image_of(host, sd, request)
    with Image.open(io.BytesIO(result.images[0].png)) as image:
        assert image.format == "PNG"
        assert image.size == (64, 64)
        text = dict(image.info)
    assert text["prompt"] == "a red cat ☀"  # not Latin-1: an iTXt chunk
    assert text["negative_prompt"] == "a dog"
    assert (text["seed"], text["steps"], text["model"]) == ("5", "2", "tiny-sd")
    assert text["pipeline"] == "StableDiffusionPipeline"
    assert result.steps == 2
    assert result.timings.first_output_s is not None
    assert 0 < result.timings.first_output_s < result.timings.total_s
    assert result.timings.peak_memory_bytes is None  # no per-request figure on the CPU


@pytest.mark.parametrize(("family", "steps"), [("sd", 4), ("flux", 3)])
def test_one_progress_event_per_step(
    host: Host, sd: str, flux: str, family: str, steps: int
) -> None:
    model = sd if family == "sd" else flux
    request = ImageRequest(prompt="a cat", width=32, height=32, steps=steps, seed=1)
    events = list(host.stream(model, request))
    denoise = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "denoise"]
    assert [(e.step, e.total) for e in denoise] == [(i, steps) for i in range(1, steps + 1)]
    assert isinstance(events[-1], ResultEvent)


def load_directly(folder: Path) -> plugin.LoadedModel[object]:
    source = ResolvedSource(
        spec=ModelSpec(plugin=PLUGIN, source=str(folder)), path=folder, origin=ModelOrigin.LOCAL
    )
    return plugin.motorpool_load(source=source, context=Context("load"))


def test_cancel_stops_between_steps(sd_folder: Path) -> None:
    model = load_directly(sd_folder)
    seen: list[int] = []
    cancel = threading.Event()

    def on_progress(event: ProgressEvent) -> None:
        seen.append(event.step)
        if event.step == 3:
            cancel.set()  # as Host.cancel does, from the third step's callback

    context = Context("cancel-me", cancel_event=cancel, on_progress=on_progress)
    request = ImageRequest(prompt="a cat", width=64, height=64, steps=40, seed=1)
    with pytest.raises(Cancelled):
        plugin.motorpool_generate(model=model, request=request, context=context)
    assert seen == [1, 2, 3]  # the interrupt flag stopped the loop at once
    plugin.motorpool_unload(model)


def test_cancel_through_the_host(host: Host, sd: str) -> None:
    request = ImageRequest(prompt="a cat", width=64, height=64, steps=200, seed=1)
    with host.stream(sd, request) as generation:
        first = next(generation)
        assert isinstance(first, ProgressEvent)
        assert host.cancel(generation.id)
        rest = list(generation)
    assert isinstance(rest[-1], ErrorEvent)
    assert rest[-1].error.code == "cancelled"
    assert len(rest) < 5
    image_of(host, sd, ImageRequest(prompt="a cat", width=64, height=64, steps=1))


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_image_to_image(host: Host, sd: str, flux: str, family: str) -> None:
    model = sd if family == "sd" else flux
    base = image_of(host, model, ImageRequest(prompt="a cat", width=64, height=64, steps=2, seed=1))
    request = ImageRequest(
        prompt="a dog", steps=4, strength=0.5, seed=2, init_image=base.images[0].png
    )
    events = list(host.stream(model, request))
    denoise = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "denoise"]
    assert [e.step for e in denoise] == [1, 2]  # strength 0.5 runs half of the 4 steps
    result = events[-1]
    assert isinstance(result, ResultEvent)
    assert isinstance(result.result, ImageResult)
    image = result.result.images[0]
    assert (image.width, image.height) == (64, 64)  # the input image's size
    with Image.open(io.BytesIO(image.png)) as opened:
        assert opened.info["strength"] == "0.5"
    resized = image_of(host, model, request.model_copy(update={"width": 32, "height": 48}))
    assert (resized.images[0].width, resized.images[0].height) == (32, 48)
    same = image_of(host, model, request)
    assert same.images[0].png == image.png


def test_native_size_when_none_is_given(host: Host, sd: str) -> None:
    result = image_of(host, sd, ImageRequest(prompt="a cat", steps=1, seed=1))
    assert (result.images[0].width, result.images[0].height) == (64, 64)  # 32 latents x 2
    wide = image_of(host, sd, ImageRequest(prompt="a cat", width=96, steps=1, seed=1))
    assert (wide.images[0].width, wide.images[0].height) == (96, 64)  # native height


def test_long_prompt_is_cut_with_a_warning(host: Host, flux: str) -> None:
    request = ImageRequest(prompt="a red cat " * 40, width=32, height=32, steps=1, seed=1)
    events = list(host.stream(flux, request))
    warnings = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "prompt_truncated"]
    assert [(w.step, w.total) for w in warnings] == [(77, 122)]  # CLIP keeps 77 of 122 tokens
    assert isinstance(events[-1], ResultEvent)


def test_tokenizer_longer_than_its_encoder_is_capped(host: Host, tmp_path: Path) -> None:
    folder = build_stable_diffusion(tmp_path / "long-tokenizer", tokenizer_max_length=512)
    model = host.load(ModelSpec(name="long", plugin=PLUGIN, source=str(folder))).id
    request = ImageRequest(prompt="a red cat " * 40, width=64, height=64, steps=1, seed=1)
    events = list(host.stream(model, request))
    assert isinstance(events[-1], ResultEvent), events[-1]  # CLIP's 77 positions were not passed
    warnings = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "prompt_truncated"]
    assert [(w.step, w.total) for w in warnings] == [(77, 122)]
    host.unload(model)


@pytest.mark.parametrize(
    ("options", "details"),
    [
        (
            {"scheduler": "DPMSolverMultistepScheduler"},
            {"scheduler": "DPMSolverMultistepScheduler"},
        ),
        ({"attention_slicing": True, "vae_slicing": True, "vae_tiling": True}, {}),
        ({"device": "cpu", "dtype": "float32", "cpu_offload": True}, {"cpu_offload": False}),
        ({"dtype": "bfloat16", "png_compress_level": 9}, {"dtype": "bfloat16"}),
    ],
    ids=["scheduler", "slicing", "offload-ignored-on-cpu", "bfloat16"],
)
def test_options_load_and_generate(
    host: Host, sd_folder: Path, options: dict[str, object], details: dict[str, object]
) -> None:
    spec = ModelSpec(name="options", plugin=PLUGIN, source=str(sd_folder), options=options)
    info = host.load(spec)
    for key, value in details.items():
        assert info.details[key] == value
    result = image_of(host, "options", ImageRequest(prompt="a cat", width=64, height=64, steps=2))
    assert result.images[0].png.startswith(b"\x89PNG")
    host.unload("options")


def test_details_and_memory(host: Host, sd: str, flux_folder: Path, sd_folder: Path) -> None:
    info = host.model(sd)
    assert info.details["pipeline"] == "StableDiffusionPipeline"
    assert info.details["device"] == "cpu"
    assert info.details["dtype"] == "float32"
    assert info.details["size_multiple"] == 8
    assert info.details["native_size"] == 64
    assert info.details["image_to_image"] is True
    weights = sum(p.stat().st_size for p in sd_folder.rglob("*.safetensors"))
    assert weights * 0.95 < info.memory_bytes <= weights  # float32 tensors, as stored
    source = ResolvedSource(
        spec=ModelSpec(plugin=PLUGIN, source=str(flux_folder), options={"dtype": "float16"}),
        path=flux_folder,
        origin=ModelOrigin.LOCAL,
    )
    stored = sum(p.stat().st_size for p in flux_folder.rglob("*.safetensors"))
    estimate = plugin.motorpool_estimate_memory(source)
    assert estimate is not None
    assert stored * 0.45 < estimate < stored * 0.5  # float32 on disk, float16 once loaded


def test_match_claims_image_pipelines(sd_folder: Path, wan_folder: Path, tmp_path: Path) -> None:
    def score(source: str, path: Path | None) -> int | None:
        return plugin.motorpool_match(ModelSpec(source=source), path)

    assert score(str(sd_folder), sd_folder) == 80
    assert score(str(wan_folder), wan_folder) is None  # for the video plugin
    assert score(str(tmp_path), tmp_path) is None
    assert score("black-forest-labs/FLUX.1-schnell", None) == 50
    assert score("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", None) is None


def test_host_picks_the_plugin_by_itself(host: Host, flux_folder: Path) -> None:
    info = host.load(ModelSpec(name="auto", source=str(flux_folder)))
    assert info.plugin == PLUGIN
    host.unload("auto")
