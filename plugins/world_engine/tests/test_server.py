"""The plugin behind the real server: sessions over a loopback WebSocket, as clients drive them."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from motorpool.server import create_app
from motorpool.server.wire import PROTOCOL_VERSION
from motorpool.server.wire.sessions import CloseCode, FrameBatchHeader, decode_batch
from motorpool.types import SeedFrame
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from tests.server.live import LiveServer, closed_with, start_live

from .conftest import settings

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's home (recordings land in its ``recordings`` folder)."""
    return tmp_path_factory.mktemp("server-home")


@pytest.fixture(scope="module")
def live(world: Path, subframes: Path, short: Path, home: Path) -> Iterator[LiveServer]:
    """A live server naming the tiny models ``world``, ``subframes`` and ``short``."""
    (home / "models.toml").write_text(
        "".join(
            f'[models.{name}]\nplugin = "world-engine"\nsource = "{folder}"\n'
            for name, folder in (("world", world), ("subframes", subframes), ("short", short))
        ),
        encoding="utf-8",
    )
    server, thread = start_live(create_app(settings(home)))
    yield server
    server.server.should_exit = True
    thread.join(15)


def url(live: LiveServer) -> str:
    return live.url.replace("http://", "ws://", 1) + f"/v1/sessions/ws?protocol={PROTOCOL_VERSION}"


def open_message(model: str, seed: SeedFrame, **config: object) -> str:
    return json.dumps({
        "type": "open",
        "model": model,
        "seed_image": base64.b64encode(seed.image).decode(),
        "config": config,
    })  # fmt: skip


@contextmanager
def session(
    live: LiveServer, model: str, seed: SeedFrame, **config: object
) -> Generator[tuple[ClientConnection, dict[str, Any], list[str]]]:
    """An open session: the socket, the 'ready' message and the progress stages before it."""
    with connect(url(live), open_timeout=TIMEOUT_S) as ws:
        ws.send(open_message(model, seed, **config))
        stages: list[str] = []
        while (message := json.loads(ws.recv(timeout=TIMEOUT_S)))["type"] == "progress":
            stages.append(message["stage"])
        assert message["type"] == "ready", message
        yield ws, message, stages


def next_batch(ws: ClientConnection) -> tuple[FrameBatchHeader, list[bytes], list[dict[str, Any]]]:
    """The next frame batch, and the text messages that came before it."""
    texts: list[dict[str, Any]] = []
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(message, bytes):
            header, frames = decode_batch(message)
            return header, frames, texts
        texts.append(json.loads(message))


def test_a_session_streams_jpeg_batches_of_the_model(live: LiveServer, seed: SeedFrame) -> None:
    """Warm-up progress, then 'ready' with the model's info, then JPEG batches of its size."""
    with session(live, "world", seed) as (ws, ready, stages):
        assert set(stages) <= {"load", "warmup"}  # loaded and warmed up by the first session
        assert ready["info"] == {
            "width": 48, "height": 32, "frames_per_step": 1, "fps": 30.0,
            "max_frames": 63, "prompt_conditioning": False,
        }  # fmt: skip
        ids: list[int] = []
        for _ in range(5):
            header, frames, _ = next_batch(ws)
            assert (header.count, header.media_type) == (1, "image/jpeg")
            assert Image.open(io.BytesIO(frames[0])).size == (48, 32)
            ids.append(header.frame_id)
        assert ids == sorted(ids)
        ws.send(json.dumps({"type": "close"}))
        assert closed_with(ws)[0] == CloseCode.NORMAL


def test_a_control_reaches_the_frames_it_makes(live: LiveServer, seed: SeedFrame) -> None:
    """The batch made under a control echoes its client_ts; held keys change the frames."""
    with session(live, "world", seed) as (ws, _, _):
        still, _, _ = next_batch(ws)
        control = {"buttons": [87], "mouse_dx": 6.0, "client_ts": 12345.5}
        ws.send(json.dumps({"type": "control", "input": control}))
        for _ in range(50):
            header, _, texts = next_batch(ws)
            assert all(t["type"] != "error" for t in texts), texts
            if header.client_ts == control["client_ts"]:
                break
        else:
            pytest.fail("no batch echoed the control's client_ts")
        assert header.frame_id > still.frame_id


def test_sub_frame_models_send_four_frames_a_batch(live: LiveServer, seed: SeedFrame) -> None:
    """A Waypoint-1.5-like model: every batch holds its 4 sub-frames."""
    with session(live, "subframes", seed) as (ws, ready, _):
        assert ready["info"]["frames_per_step"] == 4
        header, frames, _ = next_batch(ws)
        assert header.count == len(frames) == 4


def test_the_context_running_out_resets_with_a_mark(live: LiveServer, seed: SeedFrame) -> None:
    """A model whose context holds 4 frames resets every 3 batches, and says so."""
    with session(live, "short", seed) as (ws, ready, _):
        assert ready["info"]["max_frames"] == 3
        headers = [next_batch(ws)[0] for _ in range(7)]
        # A dropped batch (a slow client) passes its mark on to the one that replaces it.
        assert "auto" in [header.reset for header in headers]
        assert all(header.frame_id < 3 for header in headers)  # ids start again each reset


def test_bad_messages_are_reported_and_the_session_goes_on(
    live: LiveServer, seed: SeedFrame
) -> None:
    """An unknown key code, and a prompt to a model without prompts: errors, then frames."""
    with session(live, "world", seed) as (ws, _, _):
        ws.send(json.dumps({"type": "control", "input": {"buttons": [999]}}))
        ws.send(json.dumps({"type": "prompt", "prompt": "a castle"}))
        errors: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(errors) < 2 and time.monotonic() < deadline:
            errors += [t for t in next_batch(ws)[2] if t["type"] == "error"]
        assert [e["code"] for e in errors] == ["invalid_request", "unsupported_capability"]
        assert "254" in errors[0]["message"]
        next_batch(ws)  # still generating


def test_one_session_per_model(live: LiveServer, seed: SeedFrame) -> None:
    """A second client is refused with 4409 while the first is on; the model frees after."""
    with session(live, "world", seed) as (first, _, _):
        next_batch(first)
        with connect(url(live), open_timeout=TIMEOUT_S) as second:
            second.send(open_message("world", seed))
            code, texts = closed_with(second)
        assert code == CloseCode.BUSY
        assert texts[-2]["code"] == "model_busy"
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the first client left without 'close': the server tears its session down
        with connect(url(live), open_timeout=TIMEOUT_S) as again:
            again.send(open_message("world", seed))
            reply = json.loads(again.recv(timeout=TIMEOUT_S))
            if reply["type"] in {"ready", "progress"}:
                break
        assert time.monotonic() < deadline, "the model stayed busy after its client left"
        time.sleep(0.05)


def test_a_recording_lands_in_the_home(live: LiveServer, seed: SeedFrame, home: Path) -> None:
    """``record_path`` is a file name in the server's recordings folder; paths are refused."""
    with session(live, "world", seed, record_path="play.mp4") as (ws, _, _):
        for _ in range(5):
            next_batch(ws)
        ws.send(json.dumps({"type": "close"}))
        closed_with(ws)
    recording = home / "recordings" / "play.mp4"
    deadline = time.monotonic() + TIMEOUT_S
    while not recording.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recording.stat().st_size > 0
    with connect(url(live), open_timeout=TIMEOUT_S) as ws:
        ws.send(open_message("world", seed, record_path="../escape.mp4"))
        code, texts = closed_with(ws)
    assert code == CloseCode.INVALID
    assert "bare file name" in texts[0]["message"]
    assert not (home / "escape.mp4").exists()


def test_a_control_flood_merges_into_the_newest(live: LiveServer, seed: SeedFrame) -> None:
    """Thousands of controls in a burst queue nothing: the batch after carries the newest."""
    with session(live, "world", seed) as (ws, _, _):
        next_batch(ws)
        for index in range(2000):
            control = {"buttons": [65 + index % 26], "mouse_dx": 0.5, "client_ts": index}
            ws.send(json.dumps({"type": "control", "input": control}))
        deadline = time.monotonic() + TIMEOUT_S
        while (header := next_batch(ws)[0]).client_ts != 1999:
            assert time.monotonic() < deadline, "the newest control never reached a batch"
        assert header.client_ts == 1999
        ws.send(json.dumps({"type": "pause"}))  # the socket still answers at once
        deadline = time.monotonic() + TIMEOUT_S
        while not isinstance(reply := ws.recv(timeout=TIMEOUT_S), str):
            assert time.monotonic() < deadline
        assert json.loads(reply)["paused"] is True
