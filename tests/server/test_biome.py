"""The Biome-compatible WebSocket (``/ws``), driven as Biome's app drives it, over a real socket.

A live uvicorn server and the ``websockets`` sync client play Biome (protocol version 5):
handshake, ``init`` with a seed image, controls, notifications and RPCs. The test
engine's world session draws a 16x16 PNG whose red channel starts at the seed image's
last byte and moves with the mouse, and whose blue channel counts the buttons held.
Every JSON message is checked for ``null`` values, which Biome's validation refuses.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from motorpool.server.wire import biome as wire
from motorpool.server.wire.sessions import CloseCode
from motorpool_testengine._png import encode_png
from websockets.sync.client import ClientConnection, connect

from tests.server.live import LiveServer, closed_with
from tests.support import wait_until

WS_PATH = "/ws"
TIMEOUT_S = 5.0
SEED_RED = 40


def fake_jpeg(last: int) -> str:
    """A seed the test engine takes: JPEG magic bytes; its last byte is the red channel."""
    return base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(8) + bytes([last])).decode("ascii")


SEED = fake_jpeg(SEED_RED)
PNG_SEED = base64.b64encode(encode_png(4, 4, b"\x01\x02\x03")).decode("ascii")


# -------------------------------------------------------------------------------------------
# Helpers: a Biome client
# -------------------------------------------------------------------------------------------


def ws_url(base: str, query: str | None = f"protocol_version={wire.PROTOCOL_VERSION}") -> str:
    url = base.replace("http://", "ws://", 1) + WS_PATH
    return url if query is None else f"{url}?{query}"


def init_message(req_id: str = "1", model: str = "world", seed: str | None = SEED) -> str:
    """An ``init`` as Biome 1.1.1 sends it (``quant`` left out: no quantisation)."""
    message: dict[str, Any] = {
        "type": "init",
        "req_id": req_id,
        "model": model,
        "config": {
            "engine_backend": "world_engine",
            "scene_authoring": False,
            "action_logging": False,
            "video_recording": False,
            "video_output_dir": None,
            "cap_inference_fps": True,
        },
        "seed_filename": "default.jpg",
        "biome_version": "1.1.1",
    }
    if seed is not None:
        message["seed_image_data"] = seed
    return json.dumps(message)


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def assert_no_null(value: object) -> None:
    """Biome's Zod schemas take an absent optional field, never ``null``."""
    assert value is not None
    if isinstance(value, dict):
        for item in value.values():
            assert_no_null(item)
    elif isinstance(value, list):
        for item in value:
            assert_no_null(item)


def next_text(ws: ClientConnection) -> dict[str, Any]:
    """The next JSON message, skipping frame batches."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(message, str):
            decoded: dict[str, Any] = json.loads(message)
            assert_no_null(decoded)
            return decoded


def texts_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """JSON messages up to and including the first that ``done`` accepts."""
    texts = [next_text(ws)]
    while not done(texts[-1]):
        texts.append(next_text(ws))
    return texts


def response_to(ws: ClientConnection, req_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The reply to an RPC, and the messages that came before it."""
    texts = texts_until(ws, lambda m: m["type"] == "response" and m["req_id"] == req_id)
    return texts[-1], texts[:-1]


def decode(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """A frame batch, read as Biome's app reads it: little-endian u32 lengths."""
    (header_len,) = struct.unpack_from("<I", data, 0)
    header: dict[str, Any] = json.loads(data[4 : 4 + header_len])
    offset = 4 + header_len
    (count,) = struct.unpack_from("<I", data, offset)
    offset += 4
    frames: list[bytes] = []
    for _ in range(count):
        (length,) = struct.unpack_from("<I", data, offset)
        frames.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    assert offset == len(data)
    return header, frames


def next_batch(ws: ClientConnection) -> tuple[dict[str, Any], list[bytes]]:
    """The next frame batch (JSON messages in between must not be errors)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(message, bytes):
            return decode(message)
        assert json.loads(message)["type"] != "error", message


def batch_where(
    ws: ClientConnection, condition: Callable[[dict[str, Any]], bool], *, within: int = 300
) -> tuple[dict[str, Any], list[bytes]]:
    for _ in range(within):
        header, frames = next_batch(ws)
        if condition(header):
            return header, frames
    pytest.fail(f"no batch matched within {within} batches")


def drain(ws: ClientConnection) -> None:
    """Read until nothing has arrived for 0.1 s."""
    with contextlib.suppress(TimeoutError):
        while True:
            ws.recv(timeout=0.1)


def pixel(png: bytes) -> tuple[int, int, int]:
    """The first pixel of the test engine's PNG (one IDAT, filter 0)."""
    start = png.index(b"IDAT") + 4
    (length,) = struct.unpack_from(">I", png, start - 8)
    rows = zlib.decompress(png[start : start + length])
    return rows[1], rows[2], rows[3]


def handshake(ws: ClientConnection) -> dict[str, Any]:
    """Biome's first two messages: the hardware, then waiting for the seed."""
    info = next_text(ws)
    assert info["type"] == "system_info"
    assert isinstance(info["torch_version"], str)
    assert info["gpu_count"] >= 0
    assert next_text(ws) == {"type": "status", "stage": "session.waiting_for_seed"}
    return info


@contextmanager
def biome(base: str, model: str = "world", **connect_args: Any) -> Iterator[ClientConnection]:
    """A client whose session is open: ``init`` answered with success."""
    with connect(ws_url(base), open_timeout=TIMEOUT_S, **connect_args) as ws:
        handshake(ws)
        ws.send(init_message(model=model))
        response, before = response_to(ws, "1")
        assert response["success"] is True, response
        assert before[-1] == {"type": "status", "stage": "session.ready"}
        assert next_text(ws)["event"] == "session opened"
        yield ws


def with_alias(home: Path, name: str, options: str) -> None:
    """Add a test-engine alias to the models file (before the server starts)."""
    model = home / "tiny.mptest.json"
    with (home / "models.toml").open("a", encoding="utf-8") as models:
        models.write(f'\n[models.{name}]\nplugin = "testengine"\nsource = "{model}"\n')
        models.write(f"options = {{ {options} }}\n")


# -------------------------------------------------------------------------------------------
# The handshake
# -------------------------------------------------------------------------------------------


def test_handshake_sends_system_info_then_waits_for_the_seed(live: LiveServer) -> None:
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)


@pytest.mark.parametrize(("query", "client"), [("protocol_version=4", "4"), (None, "unknown")])
def test_a_protocol_mismatch_is_a_typed_error_then_a_close(
    live: LiveServer, query: str | None, client: str
) -> None:
    with connect(ws_url(live.url, query), open_timeout=TIMEOUT_S) as ws:
        code, texts = closed_with(ws)
    assert code == CloseCode.BAD_REQUEST
    (error,) = texts
    assert error["type"] == "error"
    assert error["message_id"] == "app.server.error.protocolVersionMismatch"
    assert error["params"] == {"client": client, "server": "5"}


# -------------------------------------------------------------------------------------------
# A session: init, frames, controls, notifications
# -------------------------------------------------------------------------------------------


def test_init_reports_stages_answers_and_streams_little_endian_batches(live: LiveServer) -> None:
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        info = handshake(ws)
        ws.send(init_message(req_id="init-7"))
        response, before = response_to(ws, "init-7")
        assert [m["stage"] for m in before] == [
            "session.loading_model.load",
            "session.loading_model.instantiate",  # the model's 'load' progress
            "session.warmup.compile",  # the test engine's 'warmup' progress
            "session.ready",
        ]
        assert response == {
            "type": "response",
            "req_id": "init-7",
            "success": True,
            "data": {
                "model": "world",
                "inference_fps": 0,  # the test engine reports no frame rate
                "system_info": {k: v for k, v in info.items() if k != "type"},
            },
        }
        opened = next_text(ws)
        assert (opened["type"], opened["event"]) == ("log", "session opened")
        assert opened["fields"]["width"] == 16
        ids: list[int] = []
        for _ in range(5):
            header, frames = next_batch(ws)
            assert set(header) == {"frame_id", "client_ts", "gen_ms", "temporal_compression"}
            assert header["client_ts"] == 0  # no control yet
            assert header["gen_ms"] >= 0
            assert header["temporal_compression"] == len(frames) == 1
            assert pixel(frames[0])[0] == SEED_RED
            ids.append(header["frame_id"])
        assert ids[0] == 1
        assert ids == list(range(ids[0], ids[0] + 5))


def test_our_decoder_reads_what_we_send() -> None:
    header = wire.FrameHeader(frame_id=3, client_ts=1.5, gen_ms=2.0, temporal_compression=2)
    data = wire.encode_batch(header, [b"one", b"three"])
    assert decode(data) == (
        {"frame_id": 3, "client_ts": 1.5, "gen_ms": 2.0, "temporal_compression": 2},
        [b"one", b"three"],
    )
    assert wire.decode_batch(data) == (header, [b"one", b"three"])


def test_control_moves_the_frame_and_echoes_ts_as_client_ts(live: LiveServer) -> None:
    with biome(live.url) as ws:
        next_batch(ws)
        send(ws, type="control", buttons=["w", "SPACE", "NOT_A_KEY"], mouse_dx=10, ts=1234.5)
        _, frames = batch_where(ws, lambda h: h["client_ts"] == 1234.5)
        red, _, blue = pixel(frames[0])
        assert red == SEED_RED + 10
        header, frames = next_batch(ws)  # motion happens once; held buttons stay held
        assert header["client_ts"] == 0
        assert pixel(frames[0])[0] == SEED_RED + 10
        assert pixel(frames[0])[2] == (blue + 2) % 256  # two known keys, the unknown ignored


def test_pause_stops_batches_until_resume(live: LiveServer) -> None:
    with biome(live.url) as ws:
        next_batch(ws)
        send(ws, type="pause")
        texts_until(ws, lambda m: m["type"] == "log" and m["event"] == "paused")
        time.sleep(0.2)  # a step running when the pause came may still arrive
        drain(ws)
        with pytest.raises(TimeoutError):  # nothing new while paused
            ws.recv(timeout=0.5)
        send(ws, type="control", mouse_dx=50, ts=99.0)  # dropped while paused, as Biome does
        send(ws, type="resume")
        assert next_text(ws)["event"] == "resumed"
        for _ in range(5):
            header, frames = next_batch(ws)
            assert header["client_ts"] != 99.0
            assert pixel(frames[0])[0] == SEED_RED


def test_reset_restarts_frame_ids_and_the_image(live: LiveServer) -> None:
    with biome(live.url) as ws:
        send(ws, type="control", mouse_dx=5, ts=1.0)
        batch_where(ws, lambda h: h["frame_id"] >= 5 and h["client_ts"] == 0)
        send(ws, type="reset")
        _, frames = batch_where(ws, lambda h: h["frame_id"] == 1)
        assert pixel(frames[0])[0] == SEED_RED


def test_prompt_is_taken_and_the_session_goes_on(live: LiveServer) -> None:
    with biome(live.url) as ws:
        send(ws, type="prompt", prompt="  a castle at dusk ")
        logged = texts_until(ws, lambda m: m["type"] == "log" and m["event"] == "prompt set")
        assert logged[-1]["fields"] == {"prompt": "a castle at dusk"}
        next_batch(ws)


@pytest.mark.parametrize(
    "rpc",
    [
        {"type": "scene_edit", "prompt": "add a tree"},
        {"type": "generate_scene", "prompt": "a beach"},
        {"type": "check_seed_safety", "image_data": SEED},
    ],
    ids=["scene_edit", "generate_scene", "check_seed_safety"],
)
def test_authoring_rpcs_are_answered_as_not_supported(
    live: LiveServer, rpc: dict[str, Any]
) -> None:
    with biome(live.url) as ws:
        send(ws, req_id="9", **rpc)
        response, before = response_to(ws, "9")
        assert all(m["type"] != "error" for m in before)
        assert response["success"] is False
        assert response["code"] == "unsupported_capability"
        assert rpc["type"] in response["error"]
        assert "error_id" not in response  # Biome has no translation for it
        next_batch(ws)


# -------------------------------------------------------------------------------------------
# Typed errors: before init, a second init, bad messages, bad seeds, unknown models
# -------------------------------------------------------------------------------------------


def test_messages_before_init_get_typed_errors_and_init_still_works(live: LiveServer) -> None:
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)
        for kind in ("control", "pause", "resume", "reset", "prompt"):
            send(ws, type=kind)
            error = next_text(ws)
            assert (error["type"], error["code"]) == ("error", "invalid_request")
            assert kind in error["message"]
            assert "message_id" not in error
        send(ws, type="scene_edit", req_id="s", prompt="x")
        assert response_to(ws, "s")[0]["code"] == "unsupported_capability"
        ws.send(init_message())
        assert response_to(ws, "1")[0]["success"] is True
        next_batch(ws)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        (json.dumps({"type": "jump"}), "invalid_request"),
        (json.dumps({"type": "control", "mouse_dx": "far"}), "invalid_request"),
        (b"\x00\x01binary", "invalid_request"),
    ],
    ids=["malformed-json", "unknown-type", "bad-field", "binary"],
)
def test_a_bad_message_is_a_typed_error_and_the_session_goes_on(
    live: LiveServer, message: str | bytes, code: str
) -> None:
    with biome(live.url) as ws:
        ws.send(message)
        error = next_text(ws)
        assert (error["type"], error["code"]) == ("error", code)
        assert error["message"]
        next_batch(ws)
        send(ws, type="pause")
        assert texts_until(ws, lambda m: m["type"] == "log")[-1]["event"] == "paused"


def test_a_bad_rpc_with_a_request_id_is_answered(live: LiveServer) -> None:
    with biome(live.url) as ws:
        send(ws, type="teleport", req_id="t")
        response, _ = response_to(ws, "t")
        assert (response["success"], response["code"]) == (False, "invalid_request")
        send(ws, type="init", req_id="i")  # no model, no config
        response, _ = response_to(ws, "i")
        assert (response["success"], response["code"]) == (False, "invalid_request")
        next_batch(ws)


@pytest.mark.parametrize(
    ("seed", "warning"),
    [
        (None, "app.server.warning.missingSeedData"),
        ("not base64!", "app.server.warning.invalidSeedData"),
        (base64.b64encode(b"GIF89a....").decode(), "app.server.warning.invalidSeedData"),
    ],
    ids=["missing", "not-base64", "not-an-image"],
)
def test_a_bad_seed_is_a_warning_and_a_failed_init(
    live: LiveServer, seed: str | None, warning: str
) -> None:
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)
        ws.send(init_message(seed=seed))
        response, before = response_to(ws, "1")
        assert before == [{"type": "warning", "message_id": warning}]
        assert response["success"] is False
        assert response["error_id"] == "app.server.error.initFailed"
        assert response["code"] == "invalid_request"
        ws.send(init_message(req_id="2", seed=PNG_SEED))  # a PNG seed works too
        assert response_to(ws, "2")[0]["success"] is True
        next_batch(ws)


def test_an_unknown_model_fails_init_and_the_client_may_retry(live: LiveServer) -> None:
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)
        ws.send(init_message(model="Overworld/Waypoint-1.5-1B"))
        response, before = response_to(ws, "1")
        error = before[-1]
        assert (error["type"], error["message_id"]) == ("error", "app.server.error.initFailed")
        assert response["success"] is False
        assert response["error_id"] == "app.server.error.initFailed"
        assert response["code"] == error["code"]
        ws.send(init_message(req_id="2"))
        assert response_to(ws, "2")[0]["success"] is True


def test_biome_model_setting_overrides_the_model_biome_names(
    live_factory: Callable[..., LiveServer],
) -> None:
    live = live_factory(biome_model="world")
    with biome(live.url, model="Overworld/Waypoint-1.5-1B") as ws:
        next_batch(ws)


def test_a_second_init_while_opening_is_refused(
    home: Path, live_factory: Callable[..., LiveServer]
) -> None:
    with_alias(home, "world-slow", "exclusive = true, step_delay_s = 0.01, load_delay_s = 0.5")
    live = live_factory()
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)
        ws.send(init_message(req_id="1", model="world-slow"))
        assert next_text(ws)["stage"] == "session.loading_model.load"
        ws.send(init_message(req_id="2", model="world-slow"))
        second, _ = response_to(ws, "2")
        assert second["success"] is False
        assert second["error_id"] == "app.server.error.initFailed"
        assert second["code"] == "invalid_request"
        assert response_to(ws, "1")[0]["success"] is True
        next_batch(ws)


def test_init_again_keeps_the_session_or_restarts_it_from_a_new_seed(live: LiveServer) -> None:
    with biome(live.url) as ws:
        send(ws, type="control", mouse_dx=3, ts=5.0)
        batch_where(ws, lambda h: h["frame_id"] > 3 and h["client_ts"] == 0)
        ws.send(init_message(req_id="2", seed=None))  # Biome re-applying a live setting
        response, _ = response_to(ws, "2")
        assert (response["success"], response["data"]["model"]) == (True, "world")
        header, frames = next_batch(ws)
        assert header["frame_id"] > 1
        assert pixel(frames[0])[0] == SEED_RED + 3  # the same session goes on
        ws.send(init_message(req_id="3", seed=fake_jpeg(99)))  # Biome picking another scene
        response, before = response_to(ws, "3")
        assert response["success"] is True
        assert [m["stage"] for m in before if m["type"] == "status"][-1] == "session.ready"
        header, frames = next_batch(ws)  # the new session's first batch
        assert header["frame_id"] == 1
        assert pixel(frames[0])[0] == 99


# -------------------------------------------------------------------------------------------
# One client at a time; leaving frees the model; keys; shutdown
# -------------------------------------------------------------------------------------------


def test_a_client_that_leaves_while_its_init_waits_is_not_waited_for(live: LiveServer) -> None:
    """Its opening is cancelled: the queue place and the one-client route are free at once."""
    host = live.handler.host

    def queued() -> int:
        return sum(model.queued_requests for model in host.models())

    with host.session("tiny", seed=base64.b64decode(PNG_SEED)):  # the model's one slot
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as leaving:
            handshake(leaving)
            leaving.send(init_message(model="tiny"))
            wait_until(lambda: queued() == 1)
        wait_until(lambda: queued() == 0)  # not when the session holding the slot ends
        wait_until(lambda: not live.handler.biome_client.locked())  # the route, just after
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as after:
            handshake(after)  # not serverBusy


def test_a_second_client_is_busy_until_the_first_leaves(live: LiveServer) -> None:
    with biome(live.url) as first:
        next_batch(first)
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as second:
            code, texts = closed_with(second)
        assert code == CloseCode.BUSY
        assert [(m["type"], m["message_id"]) for m in texts] == [
            ("error", "app.server.error.serverBusy")
        ]
    # The first client left without a word: its session closes and the model is free.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
            if next_text(ws)["type"] == "system_info":
                next_text(ws)
                ws.send(init_message())
                response, _ = response_to(ws, "1")
                if response["success"]:
                    next_batch(ws)
                    break
        assert time.monotonic() < deadline, "the model stayed busy after its client left"
        time.sleep(0.05)


def test_leaving_frees_the_model_without_server_errors(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        with biome(live.url) as ws:
            next_batch(ws)
        deadline = time.monotonic() + TIMEOUT_S
        while any(m.active_requests for m in live.handler.host.models()) or (
            live.handler.biome_client.locked()
        ):
            assert time.monotonic() < deadline, "a session outlived its client"
            time.sleep(0.01)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


def test_a_model_held_by_a_native_session_is_server_busy(live: LiveServer) -> None:
    native = live.url.replace("http://", "ws://", 1) + "/v1/sessions/ws?protocol=1"
    with connect(native, open_timeout=TIMEOUT_S) as holder:
        holder.send(json.dumps({"type": "open", "model": "world", "seed_image": PNG_SEED}))
        while json.loads(holder.recv(timeout=TIMEOUT_S))["type"] != "ready":  # native protocol
            pass
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
            handshake(ws)
            ws.send(init_message())
            response, before = response_to(ws, "1")
            assert before[-1]["message_id"] == "app.server.error.serverBusy"
            assert response["error_id"] == "app.server.error.serverBusy"
            assert response["code"] == "model_busy"


def test_api_key_is_required_when_set(live_factory: Callable[..., LiveServer]) -> None:
    live = live_factory(api_key="KEY")
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        assert closed_with(ws)[0] == CloseCode.UNAUTHORIZED
    query = f"protocol_version={wire.PROTOCOL_VERSION}&api_key=KEY"
    with connect(ws_url(live.url, query), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)
    with biome(live.url, additional_headers={"Authorization": "Bearer KEY"}) as ws:
        next_batch(ws)


def test_server_shutdown_closes_with_going_away(live: LiveServer) -> None:
    with biome(live.url) as ws:
        next_batch(ws)
        live.handler.begin_shutdown()
        assert closed_with(ws)[0] == CloseCode.GOING_AWAY


def test_the_models_rate_and_context_reach_biome(
    home: Path, live_factory: Callable[..., LiveServer]
) -> None:
    with_alias(home, "world-small", "exclusive = true, world_fps = 200.0, world_frames = 3")
    live = live_factory()
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        handshake(ws)
        ws.send(init_message(model="world-small"))
        response, _ = response_to(ws, "1")
        assert response["data"]["inference_fps"] == 200
        ids = [next_batch(ws)[0]["frame_id"] for _ in range(7)]
        assert ids == [1, 2, 3, 1, 2, 3, 1]  # the context ran out: an auto-reset each time
