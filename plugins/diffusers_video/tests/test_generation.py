"""Generation on the tiny pipelines: playable MP4s, diffusers' own frames, seeds, progress."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from motorpool import Host
from motorpool.engine import Context, LoadedModel, ResolvedSource
from motorpool.errors import Cancelled, UnsupportedCapability
from motorpool.types import (
    Capability,
    ErrorEvent,
    ModelOrigin,
    ModelSpec,
    ProgressEvent,
    ResultEvent,
    VideoRequest,
    VideoResult,
)
from motorpool_diffusers_video import plugin
from PIL import Image

from .conftest import PLUGIN, decode_mp4


def clip(host: Host, model: str, request: VideoRequest) -> VideoResult:
    result = host.generate(model, request)
    assert isinstance(result, VideoResult)
    return result


def load_directly(folder: Path) -> LoadedModel[object]:
    source = ResolvedSource(
        spec=ModelSpec(plugin=PLUGIN, source=str(folder)), path=folder, origin=ModelOrigin.LOCAL
    )
    return plugin.motorpool_load(source=source, context=Context("load"))


@pytest.mark.parametrize(
    ("family", "frames", "width", "height"),
    [
        ("wan", 5, 32, 48),
        ("wan", 9, 64, 32),
        ("ltx", 9, 32, 32),
        ("ltx", 1, 64, 32),
        ("cogvideox", 9, 32, 48),
        ("cogvideox", 1, 16, 16),
    ],
)
def test_the_mp4_decodes_to_the_frames_and_size_asked(
    host: Host,
    wan: str,
    ltx: str,
    cogvideox: str,
    tmp_path: Path,
    *,
    family: str,
    frames: int,
    width: int,
    height: int,
) -> None:
    model = {"wan": wan, "ltx": ltx, "cogvideox": cogvideox}[family]
    request = VideoRequest(
        prompt="a red cat", frames=frames, width=width, height=height, steps=2, fps=12, seed=3
    )
    result = clip(host, model, request)
    assert (result.frames, result.width, result.height, result.fps) == (frames, width, height, 12)
    assert result.media_type == "video/mp4"
    assert result.video[4:8] == b"ftyp"
    decoded = decode_mp4(result.video, tmp_path)
    assert decoded.frames.shape == (frames, height, width, 3)
    assert decoded.fps == 12
    assert decoded.codec == "h264"
    assert result.timings.total_s > 0
    assert result.timings.first_output_s is not None


@pytest.mark.parametrize("family", ["wan", "ltx"])
def test_the_frames_are_diffusers_own(
    host: Host, wan: str, ltx: str, wan_folder: Path, ltx_folder: Path, *, family: str
) -> None:
    model, folder = (wan, wan_folder) if family == "wan" else (ltx, ltx_folder)
    request = VideoRequest(
        prompt="a blue dog on the sea",
        frames=5,
        width=32,
        height=32,
        steps=3,
        seed=7,
        fps=8,
        return_frames=True,
    )
    ours = clip(host, model, request)
    pipeline = DiffusionPipeline.from_pretrained(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    extra = {"frame_rate": 8} if family == "ltx" else {}
    direct = pipeline(
        prompt=request.prompt,
        num_frames=5,
        width=32,
        height=32,
        num_inference_steps=3,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(7),
        **extra,
    ).frames[0]
    expected = (np.clip(direct, 0, 1) * 255).round().astype(np.uint8)
    assert len(ours.frame_images) == 5
    for png, frame in zip(ours.frame_images, expected, strict=True):
        with Image.open(io.BytesIO(png)) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), frame)


def test_a_seed_gives_the_same_clip(host: Host, wan: str) -> None:
    request = VideoRequest(prompt="a green circle", frames=5, width=32, height=32, steps=2, seed=11)
    first, again = clip(host, wan, request), clip(host, wan, request)
    assert first.video == again.video
    assert first.seed == 11
    other = clip(host, wan, request.model_copy(update={"seed": 12}))
    assert other.video != first.video


def test_without_a_seed_the_result_names_the_one_used(host: Host, ltx: str) -> None:
    request = VideoRequest(prompt="a cat", frames=5, width=32, height=32, steps=1)
    first = clip(host, ltx, request)
    assert first.seed is not None
    replay = clip(host, ltx, request.model_copy(update={"seed": first.seed}))
    assert replay.video == first.video


def test_the_mp4_carries_the_parameters(host: Host, wan: str) -> None:
    request = VideoRequest(
        prompt="a red square", negative_prompt="blur", frames=5, width=32, height=32, steps=2,
        guidance=4.5, seed=5,
    )  # fmt: skip
    video = clip(host, wan, request).video
    start = video.index(b'{"prompt"')
    comment = json.loads(video[start : video.index(b"}", start) + 1])
    assert comment == {
        "prompt": "a red square",
        "negative_prompt": "blur",
        "seed": 5,
        "steps": 2,
        "guidance": 4.5,
        "fps": 16,
        "model": "tiny-wan",
        "pipeline": "WanPipeline",
    }


def test_progress_per_step_then_encoding(host: Host, wan: str) -> None:
    request = VideoRequest(prompt="a cat", frames=5, width=32, height=32, steps=4, seed=1)
    with host.stream(wan, request) as generation:
        events = list(generation)
    progress = [(e.stage, e.step, e.total) for e in events if isinstance(e, ProgressEvent)]
    assert progress == [
        ("denoise", 1, 4),
        ("denoise", 2, 4),
        ("denoise", 3, 4),
        ("denoise", 4, 4),
        ("encoding", 0, 1),
        ("encoding", 1, 1),
    ]
    assert isinstance(events[-1], ResultEvent)


def test_cancel_stops_between_steps(wan_folder: Path) -> None:
    model = load_directly(wan_folder)
    seen: list[int] = []
    cancel = threading.Event()

    def on_progress(event: ProgressEvent) -> None:
        seen.append(event.step)
        if event.step == 3:
            cancel.set()  # as Host.cancel does, from the third step's callback

    context = Context("cancel-me", cancel_event=cancel, on_progress=on_progress)
    request = VideoRequest(prompt="a cat", frames=5, width=32, height=32, steps=40, seed=1)
    with pytest.raises(Cancelled):
        plugin.motorpool_generate(model=model, request=request, context=context)
    assert seen == [1, 2, 3]  # the interrupt flag stopped the loop at once: no encoding stage
    plugin.motorpool_unload(model)


def test_cancel_through_the_host(host: Host, wan: str) -> None:
    request = VideoRequest(prompt="a cat", frames=5, width=32, height=32, steps=200, seed=1)
    with host.stream(wan, request) as generation:
        first = next(generation)
        assert isinstance(first, ProgressEvent)
        assert host.cancel(generation.id)
        rest = list(generation)
    assert isinstance(rest[-1], ErrorEvent)
    assert rest[-1].error.code == "cancelled"
    assert not any(isinstance(e, ResultEvent) for e in rest)
    clip(host, wan, VideoRequest(prompt="a cat", frames=1, width=32, height=32, steps=1))


def test_image_to_video_starts_from_the_frame(host: Host, ltx: str) -> None:
    info = host.models()
    (model,) = [m for m in info if m.id == ltx]
    assert Capability.IMAGE_TO_VIDEO in model.capabilities
    buffer = io.BytesIO()
    Image.new("RGB", (80, 40), (255, 0, 0)).save(buffer, format="PNG")
    request = VideoRequest(
        prompt="a red square", init_image=buffer.getvalue(), frames=5, steps=2, seed=2,
        return_frames=True,
    )  # fmt: skip
    result = clip(host, ltx, request)
    # the image's size, down to multiples of LTX's 32
    assert (result.frames, result.width, result.height) == (5, 64, 32)
    with Image.open(io.BytesIO(result.frame_images[0])) as first:
        assert first.size == (64, 32)
    buffer = io.BytesIO()
    Image.new("RGB", (80, 40), (0, 0, 255)).save(buffer, format="PNG")
    other = clip(host, ltx, request.model_copy(update={"init_image": buffer.getvalue()}))
    assert other.frame_images[0] != result.frame_images[0]  # the clip starts from the frame
    assert other.seed == result.seed


def test_wan_image_to_video_starts_from_the_frame(host: Host, wan_i2v: str) -> None:
    """A Wan 2.1 I2V checkpoint does image-to-video only, from the frame it is given."""
    (model,) = [m for m in host.models() if m.id == wan_i2v]
    assert model.capabilities == {Capability.IMAGE_TO_VIDEO}

    def first_frame(colour: tuple[int, int, int]) -> VideoResult:
        buffer = io.BytesIO()
        Image.new("RGB", (48, 32), colour).save(buffer, format="PNG")
        request = VideoRequest(
            prompt="a red square", init_image=buffer.getvalue(), frames=5, width=48,
            height=32, steps=2, seed=2, return_frames=True,
        )  # fmt: skip
        return clip(host, wan_i2v, request)

    red, blue = first_frame((255, 0, 0)), first_frame((0, 0, 255))
    assert (red.frames, red.width, red.height) == (5, 48, 32)
    assert len(red.frame_images) == 5
    assert red.frame_images[0] != blue.frame_images[0]  # the clip starts from the frame
    assert first_frame((255, 0, 0)).video == red.video  # and is deterministic by seed
    with pytest.raises(UnsupportedCapability):
        host.generate(wan_i2v, VideoRequest(prompt="a cat", frames=5, steps=1))


def test_wan_text_to_video_has_no_image_to_video(host: Host, wan: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    request = VideoRequest(prompt="a cat", init_image=buffer.getvalue(), frames=5, steps=1)
    with pytest.raises(UnsupportedCapability):
        host.generate(wan, request)


def test_every_call_runs_on_the_models_one_worker_thread(wan_folder: Path) -> None:
    model = load_directly(wan_folder)
    threads: set[str] = set()

    def on_progress(event: ProgressEvent) -> None:
        threads.add(threading.current_thread().name)

    request = VideoRequest(prompt="a cat", frames=1, width=32, height=32, steps=1, seed=1)
    results: list[object] = []

    def call(name: str) -> None:
        context = Context(name, on_progress=on_progress)
        results.append(plugin.motorpool_generate(model=model, request=request, context=context))

    call("from-this-thread")
    worker = threading.Thread(target=call, args=("from-a-new-thread",))  # as the host streams
    worker.start()
    worker.join()
    assert len(results) == 2
    assert all(isinstance(result, VideoResult) for result in results)
    assert len(threads) == 1
    assert threads.pop().startswith("diffusers-video")
    plugin.motorpool_unload(model)
