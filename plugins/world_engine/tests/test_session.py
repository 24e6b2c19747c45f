"""Sessions through a real host on the plugin's tiny world models: what the frames show.

The tiny model is deterministic on the CPU, so two sessions given the same seed and
controls make the same JPEG bytes; comparing sessions is how these tests tell what a
control did. Its view pans with the mouse (the latent rolls by ``-mouse`` pixels), which
the decoded frames show. Timings are lower bounds only: the machine is shared.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import resource
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import imageio.v3 as iio
import numpy as np
import psutil
import pytest
from motorpool import Host, Session
from motorpool.engine import PendingBatch
from motorpool.errors import (
    Cancelled,
    EngineFailed,
    ModelBusy,
    SessionExhausted,
    StorageFailed,
    UnsupportedCapability,
)
from motorpool.types import ControlInput, FrameBatch, ModelSpec, SeedFrame, SessionConfig
from motorpool_world_engine import _recorder
from numpy.typing import NDArray
from PIL import Image

from tests.support import Background, wait_until

from .conftest import spec

Steps = Sequence[Sequence[ControlInput]]
"""For each step, the controls sent before it (none: the session's held state)."""
NO_INPUT: Sequence[ControlInput] = ()
"""A step with no new control."""

A, D, W = 65, 68, 87  # virtual-key codes


def keys(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def pixels(jpeg: bytes) -> NDArray[np.float64]:
    """A JPEG frame as ``[H, W, 3]`` floats."""
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def play(
    host: Host,
    model: ModelSpec,
    seed: SeedFrame,
    steps: Steps,
    config: SessionConfig | None = None,
) -> list[FrameBatch]:
    """Open a session, send each step's controls and step once per entry of ``steps``."""
    batches: list[FrameBatch] = []
    with host.session(model, seed=seed, config=config) as session:
        for controls in steps:
            for control in controls:
                session.control(control)
            batches.append(session.step())
    return batches


def frames_of(batches: Sequence[FrameBatch]) -> list[bytes]:
    return [frame for batch in batches for frame in batch.frames]


def best_shift(moved: NDArray[np.float64], still: NDArray[np.float64]) -> tuple[int, int]:
    """The (rows, columns) roll of ``still`` that ``moved`` matches best, away from the edges.

    The edges differ anyway: the model's convolutions pad with zeros, its roll wraps.
    """
    errors = {
        (dy, dx): float(np.abs(moved - np.roll(still, (dy, dx), axis=(0, 1)))[6:-6, 10:-10].mean())
        for dy in range(-6, 7)
        for dx in range(-10, 11)
    }
    return min(errors, key=errors.__getitem__)


def consume(session: Session, into: list[FrameBatch]) -> None:
    """Iterate ``session.frames()`` until the session ends, keeping every batch."""
    for batch in session.frames():
        into.append(batch)  # noqa: PERF402 - another thread watches the list grow


# -- what a control does -----------------------------------------------------------------


def test_batches_carry_the_frames_the_info_promises(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """A batch is one 48x32 JPEG, numbered from 0, echoing the control's timestamp."""
    with host.session(spec(world), seed=seed) as session:
        info = session.info
        assert (info.width, info.height, info.frames_per_step) == (48, 32, 1)
        assert (info.fps, info.max_frames, info.prompt_conditioning) == (30.0, 63, False)
        assert session.fps is None  # no pacing unless asked
        session.control(ControlInput(buttons=keys(W), client_ts=12.5))
        first, second = session.step(), session.step()
    assert (first.frame_id, second.frame_id) == (0, 1)
    assert (first.client_ts, second.client_ts) == (12.5, None)
    for batch in (first, second):
        assert (batch.width, batch.height, batch.media_type) == (48, 32, "image/jpeg")
        assert batch.generation_ms >= 0
        assert batch.reset is None
        assert [pixels(frame).shape for frame in batch.frames] == [(32, 48, 3)]


def test_the_same_seed_and_controls_make_the_same_frames(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """Two sessions given the same seed and controls make byte-identical frames."""
    steps = [
        [ControlInput(buttons=keys(W))],
        [ControlInput(buttons=keys(W, A), mouse_dx=3)],
        NO_INPUT,
        [ControlInput(scroll=1)],
    ]
    first = play(host, spec(world), seed, steps)
    again = play(host, spec(world), seed, steps)
    assert frames_of(first) == frames_of(again)
    assert len(set(frames_of(first))) == len(steps)  # and the world changes from step to step


@pytest.mark.parametrize(
    "control",
    [
        ControlInput(buttons=keys(W)),
        ControlInput(buttons=keys(A)),
        ControlInput(buttons=keys(W, A)),
        ControlInput(scroll=1),
        ControlInput(scroll=-1),
        ControlInput(mouse_dx=5),
    ],
    ids=["W", "A", "W+A", "scroll-up", "scroll-down", "mouse"],
)
def test_each_control_changes_the_frame(
    host: Host, world: Path, seed: SeedFrame, control: ControlInput
) -> None:
    """A step under a control makes another frame than a step under no input."""
    idle = play(host, spec(world), seed, [NO_INPUT])
    steered = play(host, spec(world), seed, [[control]])
    assert frames_of(steered) != frames_of(idle)


@pytest.mark.parametrize(("dx", "dy"), [(8, 0), (-8, 0), (0, 5), (0, -5), (6, -4)])
def test_the_mouse_pans_the_view(
    host: Host, world: Path, seed: SeedFrame, dx: float, dy: float
) -> None:
    """Moving the mouse by (dx, dy) shifts the picture by (-dx, -dy) pixels."""
    config = SessionConfig(jpeg_quality=100)
    (still,) = play(host, spec(world), seed, [NO_INPUT], config)
    (moved,) = play(host, spec(world), seed, [[ControlInput(mouse_dx=dx, mouse_dy=dy)]], config)
    assert best_shift(pixels(moved.frames[0]), pixels(still.frames[0])) == (-dy, -dx)


def test_the_newest_control_wins(host: Host, world: Path, seed: SeedFrame) -> None:
    """Two controls sent before a step act as one: the newer buttons, the mouse summed."""
    stale = ControlInput(buttons=keys(A), mouse_dx=3, mouse_dy=1, scroll=1)
    newer = ControlInput(buttons=keys(W), mouse_dx=5, mouse_dy=-4, client_ts=7.0)
    merged = ControlInput(buttons=keys(W), mouse_dx=8, mouse_dy=-3, scroll=1)
    (both,) = play(host, spec(world), seed, [[stale, newer]])
    (direct,) = play(host, spec(world), seed, [[merged]])
    (newest_only,) = play(host, spec(world), seed, [[newer]])
    assert both.frames == direct.frames
    assert both.frames != newest_only.frames  # the stale motion was not lost
    assert both.client_ts == 7.0


def test_held_buttons_stay_pressed_and_motion_happens_once(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """A step with no new control keeps the buttons held and does not move the mouse again."""
    press = ControlInput(buttons=keys(W), mouse_dx=6)
    held = play(host, spec(world), seed, [[press], NO_INPUT, NO_INPUT])
    keep = ControlInput(buttons=keys(W))
    explicit = play(host, spec(world), seed, [[press], [keep], [keep]])
    released = play(host, spec(world), seed, [[press], [ControlInput()], NO_INPUT])
    moved_again = play(host, spec(world), seed, [[press], [press], [press]])
    assert frames_of(held) == frames_of(explicit)
    assert frames_of(held)[1:] != frames_of(released)[1:]
    assert frames_of(held)[1:] != frames_of(moved_again)[1:]


# -- pause, reset, the model's context ---------------------------------------------------


def test_pause_stops_the_frames_until_resume(host: Host, world: Path, seed: SeedFrame) -> None:
    """While paused, frames() on another thread yields nothing; resume continues in order."""
    got: list[FrameBatch] = []
    with host.session(spec(world), seed=seed, config=SessionConfig(fps_cap=100)) as session:
        reader = Background(lambda: consume(session, got))
        wait_until(lambda: len(got) >= 3)
        session.pause()
        assert session.paused
        time.sleep(0.2)  # a step already under way may still arrive
        at_pause = len(got)
        time.sleep(0.3)
        assert len(got) == at_pause
        session.resume()
        assert not session.paused
        wait_until(lambda: len(got) >= at_pause + 3)
    assert reader.join() is None  # frames() ended with the session, without an error
    assert [batch.frame_id for batch in got] == list(range(len(got)))


def test_mouse_motion_sent_while_paused_is_dropped_on_resume(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """Keys held while paused still count on resume; the mouse does not jump."""
    with host.session(spec(world), seed=seed) as session:
        session.pause()
        session.control(ControlInput(buttons=keys(W), mouse_dx=8.0, mouse_dy=-4.0))
        session.resume()
        resumed = session.step()
    assert (
        resumed.frames == play(host, spec(world), seed, [[ControlInput(buttons=keys(W))]])[0].frames
    )


def test_a_paced_session_takes_the_control_given_while_it_waits(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """Pacing waits before a step, not after: a control given in the wait is in the next batch."""
    with host.session(spec(world), seed=seed, config=SessionConfig(fps_cap=5)) as session:
        frames = session.frames()
        next(frames)
        time.sleep(0.05)  # well inside the 200 ms until the next batch is due
        session.control(ControlInput(buttons=keys(W), client_ts=7.0))
        assert next(frames).client_ts == 7.0


def test_reset_returns_to_the_seed(host: Host, world: Path, seed: SeedFrame) -> None:
    """After reset() the next batch is marked, numbered 0, and shows a fresh session's frame."""
    control = ControlInput(buttons=keys(D), mouse_dx=4)
    (fresh,) = play(host, spec(world), seed, [[control]])
    with host.session(spec(world), seed=seed) as session:
        for _ in range(3):
            session.control(ControlInput(buttons=keys(A), mouse_dy=2))
            session.step()
        session.reset()
        session.control(control)
        after = session.step()
        following = session.step()
    assert (after.reset, after.frame_id) == ("requested", 0)
    assert after.frames == fresh.frames
    assert (following.reset, following.frame_id) == (None, 1)


def test_the_session_resets_itself_before_the_context_runs_out(
    host: Host, short: Path, seed: SeedFrame
) -> None:
    """On a 4-frame model (the seed and 3 more) every third batch resets, for as long as it runs."""
    with host.session(spec(short), seed=seed) as session:
        assert session.info.max_frames == 3  # the seed takes one frame of the context
        batches = [session.step() for _ in range(24)]
    # The batch made after a reset is the first of the next three.
    assert [b.reset for b in batches] == [None, None, None] + ["auto", None, None] * 7
    assert [b.frame_id for b in batches] == [0, 1, 2] * 8
    assert all(b.frames == batches[0].frames for b in batches[::3])  # back at the seed


def test_without_auto_reset_the_session_is_exhausted(
    host: Host, short: Path, seed: SeedFrame
) -> None:
    """With auto_reset off the step past the context raises SessionExhausted; reset recovers."""
    with host.session(spec(short), seed=seed, config=SessionConfig(auto_reset=False)) as session:
        first = [session.step() for _ in range(3)]
        with pytest.raises(SessionExhausted, match="3 frames of context") as caught:
            session.step()
        assert caught.value.status == 422
        assert caught.value.hint is not None
        session.reset()
        again = session.step()
    assert (again.reset, again.frame_id) == ("requested", 0)
    assert again.frames == first[0].frames


# -- pacing --------------------------------------------------------------------------------


def timed_batches(session: Session, count: int) -> float:
    """Seconds ``session.frames()`` takes to yield ``count`` batches."""
    started = time.monotonic()
    batches = list(itertools.islice(session.frames(), count))
    assert len(batches) == count
    return time.monotonic() - started


def test_realtime_paces_to_the_models_rate(host: Host, world: Path, seed: SeedFrame) -> None:
    """realtime=True spaces batches at the model's inference_fps (30 for the tiny model)."""
    with host.session(spec(world), seed=seed, config=SessionConfig(realtime=True)) as session:
        assert session.fps == 30.0
        assert timed_batches(session, 7) >= 6 / 30


def test_fps_cap_paces_and_wins_over_realtime(host: Host, world: Path, seed: SeedFrame) -> None:
    """fps_cap is the pace even with realtime set."""
    config = SessionConfig(realtime=True, fps_cap=50)
    with host.session(spec(world), seed=seed, config=config) as session:
        assert session.fps == 50
        assert timed_batches(session, 6) >= 5 / 50


def test_a_pause_during_the_pacing_wait_holds_the_next_step(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """Paused while waiting for the next batch's turn: that batch is not made."""
    got: list[FrameBatch] = []
    with host.session(spec(world), seed=seed, config=SessionConfig(fps_cap=1)) as session:
        reader = Background(lambda: consume(session, got))
        wait_until(lambda: len(got) == 1)
        session.pause()  # the next batch is due a second after the first
        time.sleep(1.5)
        assert len(got) == 1
    assert reader.join() is None


def test_closing_ends_the_pacing_wait_at_once(host: Host, world: Path, seed: SeedFrame) -> None:
    """A slow cap keeps no thread asleep after the session is closed."""
    got: list[FrameBatch] = []
    session = host.session(spec(world), seed=seed, config=SessionConfig(fps_cap=0.1))
    reader = Background(lambda: consume(session, got))
    wait_until(lambda: len(got) == 1)  # the next one is due in 10 s
    session.close()
    assert reader.join(timeout_s=2) is None
    assert len(got) == 1


def test_pacing_counts_sub_frames(host: Host, subframes: Path, seed: SeedFrame) -> None:
    """A batch of 4 sub-frames at 30 fps takes 4/30 s of real time."""
    with host.session(spec(subframes), seed=seed, config=SessionConfig(realtime=True)) as session:
        assert timed_batches(session, 3) >= 2 * 4 / 30


# -- the sub-frame model ---------------------------------------------------------------------


def test_a_sub_frame_model_makes_four_frames_a_batch(
    host: Host, subframes: Path, seed: SeedFrame
) -> None:
    """4 JPEGs a batch, the context counted in frames, the mouse motion spread over the four."""
    config = SessionConfig(jpeg_quality=100)
    with host.session(spec(subframes), seed=seed, config=config) as session:
        info = session.info
        assert (info.frames_per_step, info.width, info.height) == (4, 48, 32)
        assert info.max_frames == (16 - 1) * 4
        session.control(ControlInput(mouse_dx=8))
        moved = session.step()
        rest = [session.step() for _ in range(15)]
    (still,) = play(host, spec(subframes), seed, [NO_INPUT], config)
    assert len(moved.frames) == len(still.frames) == 4
    assert all(pixels(frame).shape == (32, 48, 3) for frame in moved.frames)
    shifts = [
        best_shift(pixels(m), pixels(s)) for m, s in zip(moved.frames, still.frames, strict=True)
    ]
    assert shifts == [(0, -2), (0, -4), (0, -6), (0, -8)]
    assert [b.reset for b in rest] == [None] * 14 + ["auto"]  # 15 passes fit, the 16th resets


# -- consumers slower than the model ------------------------------------------------------


def test_a_slow_consumer_loses_batches_not_memory(host: Host, world: Path, seed: SeedFrame) -> None:
    """run(deliver) drops what a slow consumer cannot take; at most a few batches are held.

    Each delivery counts the batches alive in the process (``PendingBatch``, frames not
    yet encoded): the encoder keeps one waiting, however far behind the consumer is.
    """
    model = spec(world, config_overrides={"n_frames": 100_000})  # no reset in the way
    delivered: list[FrameBatch] = []
    alive: list[int] = []

    def pending() -> int:
        return sum(type(o) is PendingBatch for o in gc.get_objects())

    def deliver(batch: FrameBatch) -> None:
        alive.append(pending() - before)
        delivered.append(batch)
        time.sleep(0.01)

    before = pending()

    with host.session(model, seed=seed) as session:
        runner = Background(lambda: session.run(deliver))
        wait_until(lambda: len(delivered) >= 8)
    assert runner.join() is None
    ids = [batch.frame_id for batch in delivered]
    assert all(a < b for a, b in itertools.pairwise(ids)), ids
    assert session.dropped > 0
    assert len(delivered) + session.dropped == ids[-1] + 1  # every batch delivered or counted
    assert max(alive) <= 3, alive  # delivering, waiting, and the one being made


def test_a_failed_delivery_ends_run_even_while_paused(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """What encoding or delivery raised ends run() at once, not at a next step."""
    delivering, fail = threading.Event(), threading.Event()

    def deliver(_batch: FrameBatch) -> None:
        delivering.set()
        fail.wait(5)
        raise RuntimeError("the consumer failed")

    with host.session(spec(world), seed=seed) as session:
        runner = Background(lambda: session.run(deliver))
        assert delivering.wait(5)
        session.pause()  # no step comes after the failure to report it
        time.sleep(0.2)  # a step under way ends, and the generating thread waits
        fail.set()
        outcome = runner.join(timeout_s=5)
    assert isinstance(outcome, RuntimeError)
    assert str(outcome) == "the consumer failed"


def test_a_dropped_batchs_reset_mark_reaches_the_consumer(
    host: Host, short: Path, seed: SeedFrame
) -> None:
    """When a batch marked reset is dropped, the next one delivered carries the mark."""
    delivered: list[FrameBatch] = []

    def deliver(batch: FrameBatch) -> None:
        delivered.append(batch)
        time.sleep(0.01)

    with host.session(spec(short), seed=seed) as session:
        runner = Background(lambda: session.run(deliver))
        wait_until(lambda: len(delivered) >= 10)
    assert runner.join() is None
    assert session.dropped > 0
    for before, after in itertools.pairwise(delivered):
        assert after.frame_id > before.frame_id or after.reset == "auto", (before, after)


def test_a_dropped_batchs_client_ts_reaches_the_consumer(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """The echo of a control survives its batch being dropped: a newer batch carries it.

    The consumer is held inside its first delivery while the control goes in and at least
    two batches after it are made, so the batch made under the control is the one dropped.
    """
    delivered: list[FrameBatch] = []
    entered, release = threading.Event(), threading.Event()

    def deliver(batch: FrameBatch) -> None:
        delivered.append(batch)
        entered.set()
        assert release.wait(5.0)

    with host.session(spec(world), seed=seed) as session:
        runner = Background(lambda: session.run(deliver))
        assert entered.wait(5.0)
        session.control(ControlInput(buttons=keys(W), client_ts=42.0))
        before = session.dropped  # at most one batch made before the control comes after this
        wait_until(lambda: session.dropped >= before + 3)
        release.set()
        wait_until(lambda: len(delivered) >= 3)
    assert runner.join() is None
    assert any(batch.client_ts == 42.0 for batch in delivered), delivered


# -- recording -------------------------------------------------------------------------------


# imageio leaves some parameters unannotated: these are exact for how they are called here.
_imread = cast("Callable[..., NDArray[np.uint8]]", iio.imread)
_immeta = cast("Callable[..., dict[str, object]]", iio.immeta)


def read_mp4(path: Path) -> tuple[NDArray[np.float64], float]:
    """Every frame of an MP4 (``[N, H, W, 3]``) and its frame rate."""
    frames = np.asarray(_imread(path, plugin="FFMPEG", index=None), dtype=np.float64)
    fps = _immeta(path, plugin="FFMPEG")["fps"]
    assert isinstance(fps, float | int)
    return frames, float(fps)


def test_the_recording_holds_the_frames_generated(
    host: Host, world: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """record_path gets an H.264 MP4 of every frame, in order, at the model's size and rate."""
    path = tmp_path / "recordings" / "walk.mp4"  # the folder is made
    config = SessionConfig(record_path=str(path), jpeg_quality=100)
    steps = [[ControlInput(buttons=keys(A + index), mouse_dx=4)] for index in range(12)]
    batches = play(host, spec(world), seed, steps, config)
    assert [p.name for p in path.parent.iterdir()] == ["walk.mp4"]  # no *.partial.mp4 left
    video, fps = read_mp4(path)
    assert video.shape == (12, 32, 48, 3)
    assert fps == 30
    shown = [pixels(frame) for frame in frames_of(batches)]
    for index, frame in enumerate(video):
        distances = [float(np.abs(frame - jpeg).mean()) for jpeg in shown]
        assert int(np.argmin(distances)) == index, distances
        assert distances[index] < 6, distances  # H.264 is lossy, but this is that frame


def test_a_sub_frame_recording_holds_every_sub_frame(
    host: Host, subframes: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """Four frames a batch go into the recording as four frames."""
    path = tmp_path / "sub.mp4"
    play(
        host,
        spec(subframes),
        seed,
        [[ControlInput(mouse_dx=4)]] * 3,
        SessionConfig(record_path=str(path)),
    )
    video, _ = read_mp4(path)
    assert video.shape == (12, 32, 48, 3)


def test_a_record_path_under_a_file_is_a_storage_error(
    host: Host, world: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """A record_path whose folder is a file fails the session's opening; the model stays free."""
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder", encoding="utf-8")
    config = SessionConfig(record_path=str(blocker / "walk.mp4"))
    with pytest.raises(StorageFailed, match="cannot record to") as caught:
        host.session(spec(world), seed=seed, config=config)
    assert caught.value.status == 507
    assert play(host, spec(world), seed, [NO_INPUT])[0].frame_id == 0


def test_a_recording_ffmpeg_could_not_finish_is_not_kept(
    host: Host, world: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """A recording that hit a full disk leaves no file at all, and generation went on.

    ffmpeg inherits a file-size limit of 2 kB (a full disk); the 60 frames take more.
    """
    play(host, spec(world), seed, [NO_INPUT])  # warm up first: nothing else writes under the limit
    folder = tmp_path / "recordings"
    folder.mkdir()
    path = folder / "full.mp4"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, limits[1]))
    try:
        session = host.session(spec(world), seed=seed, config=SessionConfig(record_path=str(path)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    with session:
        for index in range(60):
            session.control(ControlInput(buttons=keys(A + index % 20), mouse_dx=5))
            assert session.step().frame_id == index
    assert list(folder.iterdir()) == []


def test_closing_never_waits_on_a_stuck_ffmpeg(
    host: Host, world: Path, seed: SeedFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ffmpeg that stops taking frames (a hung disk) is killed; the model is given back."""
    monkeypatch.setattr(_recorder, "CLOSE_WAIT_S", 0.5)
    monkeypatch.setattr(_recorder, "QUEUE_FRAMES", 4)
    path = tmp_path / "recordings" / "stuck.mp4"
    session = host.session(spec(world), seed=seed, config=SessionConfig(record_path=str(path)))
    stopped = [p for p in psutil.Process().children() if "ffmpeg" in p.name()]
    assert len(stopped) == 1
    stopped[0].suspend()  # takes nothing more once its pipe is full
    try:
        for _ in range(200):  # more than the pipe and the queue hold
            session.step()
        started = time.monotonic()
        session.close()
        assert time.monotonic() - started < 5
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            stopped[0].kill()
    assert not path.parent.exists() or list(path.parent.iterdir()) == []
    assert play(host, spec(world), seed, [NO_INPUT])  # the model is free again


def test_a_session_without_frames_records_nothing(
    host: Host, world: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """A recording session closed before its first step leaves no (empty) MP4 behind."""
    path = tmp_path / "recordings" / "nothing.mp4"
    with host.session(spec(world), seed=seed, config=SessionConfig(record_path=str(path))):
        pass
    assert list(path.parent.iterdir()) == []


# -- prompts ---------------------------------------------------------------------------------


def recorder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "world-recorder"]


def test_a_model_without_prompt_conditioning_refuses_prompts(
    host: Host, world: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """session.prompt raises at once; a prompt in the config fails the opening, leaving nothing.

    The refused session had a record_path: no ffmpeg writer is left running for it.
    """
    with host.session(spec(world), seed=seed) as session:
        with pytest.raises(UnsupportedCapability, match="no prompt conditioning") as caught:
            session.prompt("a forest")
        assert caught.value.status == 400
        assert session.step().frame_id == 0  # the session goes on
    path = tmp_path / "recordings" / "refused.mp4"
    config = SessionConfig(prompt="a forest", record_path=str(path))
    with pytest.raises(UnsupportedCapability, match="no prompt conditioning"):
        host.session(spec(world), seed=seed, config=config)
    assert recorder_threads() == []
    assert not path.parent.exists()
    assert play(host, spec(world), seed, [NO_INPUT])[0].frame_id == 0  # the model is free


def test_a_prompt_steers_a_prompted_model(host: Host, prompted: Path, seed: SeedFrame) -> None:
    """A prompt changes the frames; given in the config it acts as one set before the first step."""
    (plain,) = play(host, spec(prompted), seed, [NO_INPUT])
    with host.session(spec(prompted), seed=seed) as session:
        assert session.info.prompt_conditioning
        session.prompt("a forest")
        forest = session.step()
        session.prompt("a desert")
        desert = session.step()
    configured = play(host, spec(prompted), seed, [NO_INPUT] * 2, SessionConfig(prompt="a forest"))
    assert forest.frames != plain.frames
    assert configured[0].frames == forest.frames
    assert desert.frames != configured[1].frames  # the second prompt took over


# -- one session at a time, and a model that outlives its sessions -------------------------


def test_a_model_serves_one_session_at_a_time(host: Host, world: Path, seed: SeedFrame) -> None:
    """A second session while one is open is ModelBusy; closing the first lets it open."""
    first = host.session(spec(world), seed=seed)
    with pytest.raises(ModelBusy) as caught:
        host.session(spec(world), seed=seed)
    assert caught.value.status == 409
    first.close()
    with host.session(spec(world), seed=seed) as second:
        assert second.step().frame_id == 0


def test_a_session_dropped_without_close_frees_the_model(
    host: Host, world: Path, seed: SeedFrame
) -> None:
    """A session nobody closed gives the model back once it is garbage."""
    forgotten = host.session(spec(world), seed=seed)
    forgotten.step()
    del forgotten
    gc.collect()
    with host.session(spec(world), seed=seed) as session:
        assert session.step().frame_id == 0
    (model,) = host.models()
    assert model.active_requests == 0


def test_the_model_serves_new_sessions_after_errors(
    host: Host, world: Path, seed: SeedFrame, short: Path
) -> None:
    """An engine error, an exhausted context or a closed session never take the model down.

    A mouse delta of 1e300 pixels overflows the tiny model's roll: a real engine error,
    raised on the device thread, typed as EngineFailed.
    """
    (reference,) = play(host, spec(world), seed, [NO_INPUT])
    with host.session(spec(world), seed=seed) as broken:
        broken.control(ControlInput(mouse_dx=1e300))
        with pytest.raises(EngineFailed, match="failed"):
            broken.step()
    (after_error,) = play(host, spec(world), seed, [NO_INPUT])
    assert after_error.frames == reference.frames

    closed = host.session(spec(world), seed=seed)
    closed.close()
    with pytest.raises(Cancelled):
        closed.step()
    (after_close,) = play(host, spec(world), seed, [NO_INPUT])
    assert after_close.frames == reference.frames

    exhausted = SessionConfig(auto_reset=False)
    with host.session(spec(short), seed=seed, config=exhausted) as session:
        for _ in range(3):
            session.step()
        with pytest.raises(SessionExhausted):
            session.step()
    assert len(play(host, spec(short), seed, [NO_INPUT] * 5)) == 5


def test_the_first_session_warms_the_model_up(host: Host, world: Path, seed: SeedFrame) -> None:
    """Opening the first session reports warm-up progress; later sessions have none."""
    stages: list[tuple[str, int, int | None]] = []
    for _ in range(2):
        with host.session(
            spec(world), seed=seed, on_progress=lambda e: stages.append((e.stage, e.step, e.total))
        ) as session:
            session.step()
    # The first session loads the model too: it hears that load, then the warm-up.
    assert stages == [("load", 0, 1), ("load", 1, 1), ("warmup", 0, 1), ("warmup", 1, 1)]


def test_a_seed_may_be_plain_image_bytes(host: Host, world: Path, seed: SeedFrame) -> None:
    """PNG or JPEG bytes open the same session a SeedFrame does."""
    jpeg = io.BytesIO()
    with Image.open(io.BytesIO(seed.image)) as image:
        image.save(jpeg, "JPEG", quality=95)
    for data in (seed.image, jpeg.getvalue()):
        framed = SeedFrame.of(data)
        assert framed.media_type == ("image/png" if data is seed.image else "image/jpeg")
        with host.session(spec(world), seed=data) as session:
            plain = session.step()
        with host.session(spec(world), seed=framed) as session:
            assert session.step().frames == plain.frames
