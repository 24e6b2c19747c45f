"""Bad input gets a clear typed error, and nothing half-made is presented as a result."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest
from motorpool import Host
from motorpool.engine import Context
from motorpool.errors import (
    Cancelled,
    InvalidModel,
    InvalidOptions,
    InvalidRequest,
    MotorpoolError,
    StorageFailed,
)
from motorpool.types import ErrorEvent, ModelSpec, VideoRequest
from motorpool_diffusers_video import plugin
from motorpool_diffusers_video._mp4 import Encoding, encode_mp4

from .conftest import PLUGIN, image_pipeline_folder
from .test_generation import load_directly


def request(**fields: object) -> VideoRequest:
    base: dict[str, object] = {"prompt": "a cat", "frames": 5, "width": 32, "height": 32}
    return VideoRequest.model_validate(base | {"steps": 1} | fields)


@pytest.mark.parametrize(("frames", "hint"), [(2, "1 or 5"), (6, "5 or 9"), (16, "13 or 17")])
def test_frame_counts_must_be_4k_plus_1(host: Host, wan: str, frames: int, hint: str) -> None:
    with pytest.raises(InvalidRequest, match=r"4k\+1 frames") as caught:
        host.generate(wan, request(frames=frames))
    assert caught.value.hint == f"use {hint}"


def test_ltx_checks_frames_too(host: Host, ltx: str) -> None:
    with pytest.raises(InvalidRequest, match=r"frames 8: .*LTXPipeline"):
        host.generate(ltx, request(frames=8))


def test_cogvideox_needs_8k_plus_1_frames(host: Host, cogvideox: str) -> None:
    with pytest.raises(InvalidRequest, match=r"8k\+1 frames") as caught:
        host.generate(cogvideox, request(frames=5))
    assert caught.value.hint == "use 1 or 9"


@pytest.mark.parametrize(
    ("model", "field", "value", "multiple", "hint"),
    [
        ("wan", "width", 40, 16, "use 32 or 48"),
        ("wan", "height", 8, 16, "use 16 or 32"),
        ("ltx", "width", 48, 32, "use 32 or 64"),
    ],
)
def test_sides_must_be_multiples_of_the_models_factor(
    host: Host, wan: str, ltx: str, *, model: str, field: str, value: int, multiple: int, hint: str
) -> None:
    with pytest.raises(
        InvalidRequest, match=f"{field} {value} is not a multiple of {multiple}"
    ) as caught:
        host.generate(wan if model == "wan" else ltx, request(**{field: value}))
    assert caught.value.hint == hint


def test_an_unreadable_first_frame(host: Host, ltx: str) -> None:
    with pytest.raises(InvalidRequest, match="the first frame is not an image"):
        host.generate(ltx, request(init_image=b"not a picture"))


def test_an_image_pipeline_is_refused_with_the_plugin_to_use(host: Host, tmp_path: Path) -> None:
    folder = image_pipeline_folder(tmp_path / "tiny-sd")
    with pytest.raises(InvalidModel, match="image pipeline") as caught:
        host.load(ModelSpec(plugin=PLUGIN, source=str(folder)))
    assert caught.value.hint is not None
    assert "diffusers-image" in caught.value.hint


def test_not_a_pipeline_folder(host: Host, tmp_path: Path, wan_folder: Path) -> None:
    with pytest.raises(InvalidModel, match=r"no model_index\.json"):
        host.load(ModelSpec(plugin=PLUGIN, source=str(tmp_path)))
    broken = tmp_path / "broken"
    shutil.copytree(wan_folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(InvalidModel, match="lacks the folder of vae"):
        host.load(ModelSpec(plugin=PLUGIN, source=str(broken)))
    (broken / "model_index.json").write_text(json.dumps({"vae": 1}), encoding="utf-8")
    with pytest.raises(InvalidModel, match="names no pipeline class"):
        host.load(ModelSpec(plugin=PLUGIN, source=str(broken)))


def test_bad_options(host: Host, wan_folder: Path) -> None:
    for options in ({"crf": 60}, {"preset": "instant"}, {"device": "tpu"}, {"colour": 1}):
        with pytest.raises(InvalidOptions):
            host.load(ModelSpec(plugin=PLUGIN, source=str(wan_folder), options=options))


def test_a_job_cancelled_before_it_starts(host: Host, wan: str) -> None:
    with host.stream(wan, request(steps=50)) as generation:
        generation.cancel()
        events = list(generation)
    assert [type(e) for e in events] == [ErrorEvent]  # no step ran, no clip came out
    assert isinstance(events[0], ErrorEvent)
    assert isinstance(MotorpoolError.from_info(events[0].error), Cancelled)


def test_a_missing_scratch_folder_is_a_storage_error(
    host: Host, wan_folder: Path, tmp_path: Path
) -> None:
    options = {"scratch_dir": str(tmp_path / "gone")}
    model = host.load(
        ModelSpec(name="no-room", plugin=PLUGIN, source=str(wan_folder), options=options)
    )
    with pytest.raises(StorageFailed, match="not a folder"):
        host.generate(model.id, request())
    host.unload(model.id)


def test_a_full_disk_leaves_no_file_and_raises_a_storage_error(tmp_path: Path) -> None:
    frames = [bytes([value]) * (64 * 64 * 3) for value in range(0, 250, 10)]
    noise = [bytes(range(256)) * (64 * 64 * 3 // 256) for _ in range(25)]
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    # ffmpeg inherits a file-size limit of 2 kB: its writes fail as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limits[1]))
    try:
        with pytest.raises(StorageFailed, match="could not be written") as caught:
            encode_mp4(frames + noise, (64, 64), 8, Encoding(scratch_dir=tmp_path), {})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert caught.value.status == 507
    assert list(tmp_path.iterdir()) == []  # neither the partial file nor a final one
    assert encode_mp4(frames, (64, 64), 8, Encoding(scratch_dir=tmp_path), {})[4:8] == b"ftyp"
    assert list(tmp_path.iterdir()) == []


def test_frames_of_the_wrong_size_are_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(MotorpoolError, match="ffmpeg could not encode") as caught:
        encode_mp4([b"\x00" * 10], (64, 64), 8, Encoding(scratch_dir=tmp_path), {})
    assert caught.value.code == "engine_error"
    assert list(tmp_path.iterdir()) == []


def test_an_unloaded_model_refuses(wan_folder: Path) -> None:
    model = load_directly(wan_folder)
    plugin.motorpool_unload(model)
    with pytest.raises(InvalidRequest, match="unloaded"):
        plugin.motorpool_generate(model=model, request=request(), context=Context("late"))
