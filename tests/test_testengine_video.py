"""Video jobs on the test engine, through a real host: frames, determinism, progress, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from motorpool import Host, Settings
from motorpool.errors import InvalidRequest, UnsupportedCapability
from motorpool.types import (
    Capability,
    ErrorEvent,
    ProgressEvent,
    ResultEvent,
    StreamEvent,
    VideoRequest,
    VideoResult,
)
from motorpool_testengine._png import PNG_SIGNATURE, encode_png, png_size, split_pngs
from motorpool_testengine.plugin import VIDEO_MEDIA_TYPE, write_model

from tests.support import spec


@pytest.fixture
def host(tmp_path: Path):
    settings = Settings.model_validate(
        {"home": tmp_path, "plugins": "testengine", "keep_alive_s": -1}
    )
    with Host(settings) as host:
        yield host


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write_model(tmp_path / "m.mptest.json")


def video(host: Host, model: str, request: VideoRequest) -> VideoResult:
    result = host.generate(model, request)
    assert isinstance(result, VideoResult)
    return result


def test_the_model_offers_video(host: Host, model_file: Path) -> None:
    info = host.load(str(model_file))
    assert Capability.VIDEO in info.capabilities


def test_frames_and_size_decode(host: Host, model_file: Path) -> None:
    request = VideoRequest(prompt="a cat", frames=9, width=24, height=16, fps=12, steps=2, seed=5)
    result = video(host, str(model_file), request)
    assert result.media_type == VIDEO_MEDIA_TYPE
    assert (result.frames, result.width, result.height, result.fps) == (9, 24, 16, 12)
    assert result.seed == 5
    assert result.video.count(PNG_SIGNATURE) == 9  # countable by signature, as documented
    pngs = split_pngs(result.video)
    assert len(pngs) == 9
    assert b"".join(pngs) == result.video
    assert all(png_size(png) == (24, 16) for png in pngs)
    assert pngs[0] == encode_png(24, 16, seed=5)
    assert len(set(pngs)) == 9  # every frame differs
    assert result.frame_images == ()  # not asked for


def test_defaults_and_return_frames(host: Host, model_file: Path) -> None:
    result = video(host, str(model_file), VideoRequest(prompt="a cat", return_frames=True))
    assert (result.frames, result.width, result.height, result.fps) == (5, 32, 32, 8)
    assert list(result.frame_images) == split_pngs(result.video)


def test_same_seed_same_bytes(host: Host, model_file: Path) -> None:
    def make(seed: int) -> bytes:
        request = VideoRequest(prompt="a cat", frames=5, width=16, height=16, seed=seed)
        return video(host, str(model_file), request).video

    assert make(3) == make(3)
    assert make(3) != make(4)


def test_progress_is_one_event_per_step_then_encoding(host: Host, model_file: Path) -> None:
    request = VideoRequest(prompt="a cat", frames=5, width=16, height=16, steps=3)
    events = list(host.stream(str(model_file), request))
    progress = [(e.stage, e.step, e.total) for e in events if isinstance(e, ProgressEvent)]
    assert progress == [
        ("denoise", 1, 3),
        ("denoise", 2, 3),
        ("denoise", 3, 3),
        ("encoding", 1, 1),
    ]
    final = events[-1]
    assert isinstance(final, ResultEvent)
    assert isinstance(final.result, VideoResult)
    assert len(split_pngs(final.result.video)) == 5


@pytest.mark.parametrize("frames", [2, 4, 6, 8])
def test_a_frame_count_other_than_4k_plus_1_is_invalid(
    host: Host, model_file: Path, frames: int
) -> None:
    request = VideoRequest(prompt="a cat", frames=frames, width=16, height=16)
    with pytest.raises(InvalidRequest, match="one more than a multiple of 4"):
        host.generate(str(model_file), request)
    final = list(host.stream(str(model_file), request))[-1]
    assert isinstance(final, ErrorEvent)
    assert final.error.code == "invalid_request"


def test_a_size_not_a_multiple_of_8_is_invalid(host: Host, model_file: Path) -> None:
    with pytest.raises(InvalidRequest, match="multiples of 8"):
        host.generate(str(model_file), VideoRequest(prompt="a cat", width=20, height=16))


def test_image_to_video_is_refused(host: Host, model_file: Path) -> None:
    request = VideoRequest(prompt="a cat", init_image=encode_png(16, 16, seed=1))
    with pytest.raises(UnsupportedCapability):
        host.generate(str(model_file), request)


def test_cancel_mid_run_ends_with_a_cancelled_error(host: Host, model_file: Path) -> None:
    slow = spec(model_file, "slow", step_delay_s=0.02)
    request = VideoRequest(prompt="a cat", frames=5, width=16, height=16, steps=200)
    generation = host.stream(slow, request)
    events: list[StreamEvent] = [next(generation), next(generation)]
    generation.cancel()
    events += list(generation)
    assert len(events) <= 4
    assert not any(isinstance(e, ResultEvent) for e in events)
    final = events[-1]
    assert isinstance(final, ErrorEvent)
    assert final.error.code == "cancelled"
    assert host.model("slow").active_requests == 0
    assert video(host, "slow", VideoRequest(prompt="a cat", steps=1)).frames == 5  # still serves


def test_split_pngs_rejects_malformed_data() -> None:
    png = encode_png(8, 8, seed=1)
    assert split_pngs(b"") == []
    with pytest.raises(ValueError, match="no PNG signature"):
        split_pngs(png + b"junk")
    with pytest.raises(ValueError, match=r"IEND|cut short"):
        split_pngs(png[:-6])
