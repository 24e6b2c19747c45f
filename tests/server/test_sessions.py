"""The interactive-session WebSocket (``/v1/sessions/ws``), end to end over a real socket.

A live uvicorn server and the ``websockets`` sync client: close codes are what a real
client sees. The test engine's world session draws a 16x16 PNG whose colour moves with
the mouse and echoes each control's ``client_ts`` on the batch generated under it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import anyio
import anyio.to_thread
import httpx
import pytest
import uvicorn
from motorpool import Session
from motorpool.server._sessions import ThreadSender
from motorpool.server.wire import PROTOCOL_VERSION
from motorpool.server.wire.sessions import CloseCode, FrameBatchHeader, decode_batch
from motorpool_testengine._png import PNG_SIGNATURE, encode_png
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from structlog.testing import capture_logs
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.server.live import AppFactory, LiveServer, closed_with, wait_started
from tests.support import wait_until

WS_PATH = "/v1/sessions/ws"
SEED_PNG = encode_png(16, 16, b"\x10\x20\x30")
SEED = base64.b64encode(SEED_PNG).decode("ascii")
TIMEOUT_S = 5.0


# -------------------------------------------------------------------------------------------
# Helpers: URLs, messages, reading batches and text, PNG checks
# -------------------------------------------------------------------------------------------


def ws_url(base: str, query: str | None = f"protocol={PROTOCOL_VERSION}") -> str:
    url = base.replace("http://", "ws://", 1) + WS_PATH
    return url if query is None else f"{url}?{query}"


def open_message(model: str = "world", **extra: Any) -> str:
    return json.dumps({"type": "open", "model": model, "seed_image": SEED, **extra})


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def opened(ws: ClientConnection) -> dict[str, Any]:
    """The reply to 'open' after its progress messages: 'ready' or an error."""
    while True:
        reply: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT_S))
        if reply["type"] != "progress":
            return reply


@contextmanager
def session(base: str, model: str = "world", **connect_args: Any) -> Iterator[ClientConnection]:
    """An open session: the 'ready' message is checked and consumed."""
    with connect(ws_url(base), open_timeout=TIMEOUT_S, **connect_args) as ws:
        ws.send(open_message(model))
        stages: list[str] = []
        while (ready := json.loads(ws.recv(timeout=TIMEOUT_S)))["type"] == "progress":
            stages.append(ready["stage"])
        assert stages[-1:] == ["warmup"]  # after the model's load, when the session loads it
        assert set(stages[:-1]) <= {"load"}, stages
        assert ready["type"] == "ready", ready
        assert ready["info"]["width"] == ready["info"]["height"] == 16
        assert ready["session_id"]
        assert ready["model"] == model
        assert ready["protocol_version"] == PROTOCOL_VERSION
        yield ws


def next_batch(ws: ClientConnection) -> tuple[FrameBatchHeader, list[bytes]]:
    """The next binary frame batch (text messages in between must not be errors)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(message, bytes):
            return decode_batch(message)
        assert json.loads(message)["type"] != "error", message


def next_text(ws: ClientConnection) -> dict[str, Any]:
    """The next JSON text message, skipping frame batches."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(message, str):
            decoded: dict[str, Any] = json.loads(message)
            return decoded


def drain(ws: ClientConnection) -> int:
    """Read whatever arrives until nothing has for 0.1 s; how many messages that was."""
    count = 0
    with contextlib.suppress(TimeoutError):
        while True:
            ws.recv(timeout=0.1)
            count += 1
    return count


def batch_where(
    ws: ClientConnection, condition: Callable[[FrameBatchHeader], bool], *, within: int = 200
) -> tuple[FrameBatchHeader, list[bytes]]:
    """Read batches until one matches ``condition``."""
    for _ in range(within):
        header, frames = next_batch(ws)
        if condition(header):
            return header, frames
    pytest.fail(f"no batch matched within {within} batches")


def rejected(url: str, *messages: str | bytes, **connect_args: Any) -> tuple[int | None, list]:
    """Connect, send ``messages`` and return how the server closed the socket."""
    with connect(url, open_timeout=TIMEOUT_S, **connect_args) as ws:
        with contextlib.suppress(ConnectionClosed):  # the server may close before reading
            for message in messages:
                ws.send(message)
        return closed_with(ws)


def png_pixel(png: bytes) -> tuple[int, int, tuple[int, int, int]]:
    """Check a PNG's structure (signature, chunk CRCs, pixel data) and return its first pixel."""
    assert png.startswith(PNG_SIGNATURE)
    position, chunks = len(PNG_SIGNATURE), dict[bytes, bytes]()
    while position < len(png):
        (length,) = struct.unpack_from(">I", png, position)
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", png, position + 8 + length)
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    assert b"IEND" in chunks
    width, height, depth, colour = struct.unpack_from(">IIBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)  # 8-bit RGB
    rows = zlib.decompress(chunks[b"IDAT"])
    assert len(rows) == height * (1 + 3 * width)
    return width, height, (rows[1], rows[2], rows[3])


# -------------------------------------------------------------------------------------------
# A session: ready, frames, controls
# -------------------------------------------------------------------------------------------


def test_open_streams_valid_png_batches_with_increasing_ids(live: LiveServer) -> None:
    with session(live.url) as ws:
        ids: list[int] = []
        for _ in range(5):
            header, frames = next_batch(ws)
            assert header.type == "frames"
            assert (header.width, header.height, header.media_type) == (16, 16, "image/png")
            assert header.count == len(frames) == 1
            assert header.generation_ms >= 0
            assert png_pixel(frames[0])[:2] == (16, 16)
            ids.append(header.frame_id)
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


def test_control_moves_the_frame_and_echoes_client_ts(live: LiveServer) -> None:
    with session(live.url) as ws:
        _, frames = next_batch(ws)
        red_before = png_pixel(frames[0])[2][0]
        send(ws, type="control", input={"mouse_dx": 10, "client_ts": 1234.5})
        header, frames = batch_where(ws, lambda h: h.client_ts == 1234.5)
        assert png_pixel(frames[0])[2][0] == (red_before + 10) % 256
        header, frames = next_batch(ws)  # motion happens once; the colour stays
        assert header.client_ts is None
        assert png_pixel(frames[0])[2][0] == (red_before + 10) % 256


def test_pause_stops_batches_until_resume(live: LiveServer) -> None:
    with session(live.url) as ws:
        next_batch(ws)
        send(ws, type="pause")
        state = next_text(ws)
        assert state["type"] == "state"
        assert state["paused"] is True
        time.sleep(0.2)  # a step running when the pause came may still arrive
        drain(ws)
        with pytest.raises(TimeoutError):  # nothing new while paused
            ws.recv(timeout=0.5)
        send(ws, type="resume")
        state = next_text(ws)
        assert (state["type"], state["paused"]) == ("state", False)
        next_batch(ws)


def test_reset_restarts_frame_ids(live: LiveServer) -> None:
    with session(live.url) as ws:
        header, _ = batch_where(ws, lambda h: h.frame_id >= 5)
        send(ws, type="reset")
        assert next_text(ws)["type"] == "state"
        batch_where(ws, lambda h: h.frame_id < header.frame_id)


def test_prompt_is_acknowledged_with_the_state(live: LiveServer) -> None:
    with session(live.url) as ws:
        send(ws, type="prompt", prompt="a castle at dusk")
        state = next_text(ws)
        assert state["type"] == "state"
        assert state["paused"] is False
        assert state["frames_sent"] >= 0
        assert state["frames_dropped"] >= 0
        next_batch(ws)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_json"),
        (json.dumps({"type": "jump"}), "invalid_request"),
        (json.dumps({"type": "control", "input": {"scroll": 5}}), "invalid_request"),
        (open_message(), "invalid_request"),  # a second 'open' on the same socket
        (b"\x00\x01binary", "invalid_request"),
    ],
    ids=["malformed-json", "unknown-type", "out-of-range", "second-open", "binary"],
)
def test_a_bad_message_is_reported_and_the_session_goes_on(
    live: LiveServer, message: str | bytes, code: str
) -> None:
    with session(live.url) as ws:
        ws.send(message)
        error = next_text(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["message"]
        next_batch(ws)
        send(ws, type="pause")  # still listening
        assert next_text(ws)["paused"] is True


def test_close_message_ends_with_closed_and_1000(live: LiveServer) -> None:
    with session(live.url) as ws:
        next_batch(ws)
        send(ws, type="close")
        code, texts = closed_with(ws)
        assert code == CloseCode.NORMAL
        assert texts[-1]["type"] == "closed"


def test_server_shutdown_closes_with_going_away(live: LiveServer) -> None:
    with session(live.url) as ws:
        next_batch(ws)
        live.handler.begin_shutdown()
        code, texts = closed_with(ws)
        assert code == CloseCode.GOING_AWAY
        assert texts[-1]["type"] == "closed"


def test_cancelling_a_session_by_its_id_closes_it_as_cancelled(live: LiveServer) -> None:
    """Not as a shutdown: the client hears `cancelled` and 4499, and the model is free."""
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        ws.send(open_message())
        ready = opened(ws)
        next_batch(ws)
        cancel = httpx.post(f"{live.url}/api/requests/{ready['session_id']}/cancel")
        assert cancel.json()["cancelled"] is True
        code, texts = closed_with(ws)
    assert code == CloseCode.CANCELLED
    assert [t["code"] for t in texts if t["type"] == "error"] == ["cancelled"]
    # The model is given back once the route closes the session, just after the close.
    wait_until(lambda: all(m.active_requests == 0 for m in live.handler.host.models()))
    with session(live.url) as again:
        next_batch(again)


def test_a_session_failing_on_a_bug_closes_with_engine_error_and_is_logged(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an error of a type the host knows (a bug): the client is told, not 'shutting down'."""

    def broken(_session: Session, _deliver: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(Session, "run", broken)
    with capture_logs() as logs, session(live.url) as ws:
        code, texts = closed_with(ws)
    assert code == CloseCode.INTERNAL_ERROR
    (error,) = [t for t in texts if t["type"] == "error"]
    assert error["code"] == "engine_error"
    assert "ZeroDivisionError" in error["message"]
    (failed,) = [entry for entry in logs if entry["event"] == "session failed"]
    assert failed["log_level"] == "error"
    assert failed["exc_info"] is True  # logged with its traceback


def test_progress_sent_from_threads_of_its_own_reaches_the_client() -> None:
    """A hub download reports from its own worker threads, not anyio's: those messages go too,
    each thread's in the order it gave them."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        send = ThreadSender(websocket)

        def report(thread: int) -> None:
            for step in range(20):
                send(f"{thread} {step}")

        def report_from_plain_threads() -> None:
            threads = [threading.Thread(target=report, args=(i,)) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        await anyio.to_thread.run_sync(report_from_plain_threads)
        await send.drained()
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/progress", endpoint)])
    with TestClient(app) as client, client.websocket_connect("/progress") as ws:
        received = [ws.receive_text().split() for _ in range(60)]
    for thread in "012":
        assert [int(step) for t, step in received if t == thread] == list(range(20))


def test_a_client_that_leaves_while_its_session_waits_gives_its_place_back(
    live_factory: Callable[..., LiveServer],
) -> None:
    """Its opening is cancelled: the queue place is free at once, not when a slot frees."""
    live = live_factory(max_queue=1)

    def queued() -> int:
        return sum(model.queued_requests for model in live.handler.host.models())

    with session(live.url, "tiny") as holder:  # the model's one slot
        next_batch(holder)
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as leaving:
            leaving.send(open_message("tiny"))
            wait_until(lambda: queued() == 1)
        wait_until(lambda: queued() == 0)
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as hasty:
            hasty.send(open_message("tiny"))  # and leaves before its opening has started
        time.sleep(0.3)
        assert queued() == 0
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as waiting:
            waiting.send(open_message("tiny"))
            wait_until(lambda: queued() == 1)  # waits in the queue, not refused as full
            send(holder, type="close")
            assert closed_with(holder)[0] == CloseCode.NORMAL
            assert opened(waiting)["type"] == "ready"
            next_batch(waiting)


def test_a_flood_before_ready_is_refused_not_kept(
    live_factory: Callable[..., LiveServer],
) -> None:
    """Messages kept while a session opens are bounded: past 64 the client is refused."""
    live = live_factory(max_queue=1)
    # The holder's batches go unread: an unbounded client buffer lets its close be seen.
    with session(live.url, "tiny", max_queue=None) as holder:  # the model's one slot
        next_batch(holder)
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as flooding:
            flooding.send(open_message("tiny"))
            with contextlib.suppress(ConnectionClosed):  # refused midway
                for _ in range(100):
                    send(flooding, type="pause")
            code, texts = closed_with(flooding)
        assert code == CloseCode.BAD_REQUEST
        (error,) = [t for t in texts if t["type"] == "error"]
        assert "before 'ready'" in error["message"]
        wait_until(lambda: all(m.queued_requests == 0 for m in live.handler.host.models()))


def test_controls_sent_before_ready_are_applied(live: LiveServer) -> None:
    """Messages sent while the session opens are kept and taken first, in order."""
    with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
        ws.send(open_message())
        send(ws, type="pause")
        assert opened(ws)["type"] == "ready"
        state = next_text(ws)
        assert (state["type"], state["paused"]) == ("state", True)


def test_clients_leaving_mid_stream_cause_no_server_error(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch being sent as the client goes is no unhandled error, and the session ends."""
    for _ in range(10):
        # No step delay: a send is nearly always due. No client flow control: the client
        # reads on while it closes, so the close handshake is not stuck behind batches.
        with session(live.url, "tiny", max_queue=None) as ws:
            next_batch(ws)
    deadline = time.monotonic() + TIMEOUT_S
    while any(m.active_requests for m in live.handler.host.models()):
        assert time.monotonic() < deadline, "a session outlived its client"
        time.sleep(0.01)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


# -------------------------------------------------------------------------------------------
# Refusals: protocol, first message, model, busy, auth
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [None, "protocol=2", "protocol=one"])
def test_missing_or_wrong_protocol_is_refused(live: LiveServer, query: str | None) -> None:
    code, texts = rejected(ws_url(live.url, query))
    assert code == CloseCode.BAD_REQUEST
    assert texts[0]["type"] == "error"
    assert f"protocol={PROTOCOL_VERSION}" in texts[0]["hint"]


@pytest.mark.parametrize(
    "first",
    [json.dumps({"type": "pause"}), "{not json", json.dumps({"type": "open"}), b"\x89PNG"],
    ids=["pause", "malformed", "open-without-fields", "binary"],
)
def test_first_message_must_be_a_valid_open(live: LiveServer, first: str | bytes) -> None:
    code, texts = rejected(ws_url(live.url), first)
    assert code == CloseCode.BAD_REQUEST
    assert texts[0]["type"] == "error"


def test_unknown_model_closes_with_4404(live: LiveServer) -> None:
    code, texts = rejected(ws_url(live.url), open_message("no-such-model"))
    assert code == CloseCode.NOT_FOUND
    assert texts[0]["code"] == "unknown_model"


def test_a_model_that_fails_to_load_closes_with_its_status(live: LiveServer) -> None:
    code, texts = rejected(ws_url(live.url), open_message("broken"))
    assert code == CloseCode.INTERNAL_ERROR
    assert texts[0]["code"] == "load_failed"


def test_exclusive_model_is_busy_until_the_first_client_leaves(live: LiveServer) -> None:
    with session(live.url) as first:
        next_batch(first)
        code, texts = rejected(ws_url(live.url), open_message())
        assert code == CloseCode.BUSY
        assert texts[0]["code"] == "model_busy"
        assert texts[0]["type"] == "error"
    # The first client left without a 'close' message: the server tears the session down.
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        with connect(ws_url(live.url), open_timeout=TIMEOUT_S) as ws:
            ws.send(open_message())
            reply = opened(ws)
            if reply["type"] == "ready":
                next_batch(ws)
                break
            assert reply["code"] == "model_busy", reply
        assert time.monotonic() < deadline, "the model stayed busy after its client left"
        time.sleep(0.05)


def test_api_key_is_required_when_set(live_factory: Callable[..., LiveServer]) -> None:
    live = live_factory(api_key="KEY")
    code, _ = rejected(ws_url(live.url), open_message())
    assert code == CloseCode.UNAUTHORIZED
    code, _ = rejected(ws_url(live.url, f"protocol={PROTOCOL_VERSION}&api_key=WRONG"))
    assert code == CloseCode.UNAUTHORIZED
    code, _ = rejected(ws_url(live.url), additional_headers={"Authorization": "Bearer WRONG"})
    assert code == CloseCode.UNAUTHORIZED

    with connect(ws_url(live.url, f"protocol={PROTOCOL_VERSION}&api_key=KEY")) as ws:
        ws.send(open_message("tiny"))
        assert opened(ws)["type"] == "ready"
        next_batch(ws)
    with session(live.url, additional_headers={"Authorization": "Bearer KEY"}) as ws:
        next_batch(ws)
        send(ws, type="close")
        assert closed_with(ws)[0] == CloseCode.NORMAL


# -------------------------------------------------------------------------------------------
# Back-pressure: a slow client gets the newest batch, older ones are dropped and counted
# -------------------------------------------------------------------------------------------


class _SmallReads(ClientConnection):
    recv_bufsize = 1024  # little read ahead by the client library


class _SmallWriteBuffer(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # asyncio's or uvloop's transport (the latter is no asyncio.Transport subclass)
        writable = cast("asyncio.WriteTransport", transport)
        writable.set_write_buffer_limits(high=4096)  # the default is 64 KiB


@contextmanager
def small_buffer_server(make_app: AppFactory) -> Iterator[str]:
    """A live server whose sockets buffer little, so a slow reader is felt within a second.

    With the default buffers (asyncio's 64 KiB, loopback TCP's megabytes) the world
    model's 100 small batches a second would take minutes to fill them.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    config = uvicorn.Config(make_app(), ws=_SmallWriteBuffer, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    wait_started(server, thread)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()


def test_a_slow_client_gets_fresh_batches_and_a_drop_count(make_app: AppFactory) -> None:
    with small_buffer_server(make_app) as base:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        sock.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        small = {"sock": sock, "max_queue": 1, "create_connection": _SmallReads}
        with session(base, compression=None, **small) as ws:  # uncompressed: ~250 B a batch
            first, _ = next_batch(ws)
            assert first.dropped == 0
            for _ in range(10):  # a slow reader: 10 batches in 2.5 s, while ~250 are made
                time.sleep(0.25)
                next_batch(ws)
            # What the buffers held was generated before the drops: read on to the news.
            header, _ = batch_where(ws, lambda h: h.dropped > 0, within=2000)
            later, _ = next_batch(ws)
            assert later.frame_id > header.frame_id
            assert later.dropped >= header.dropped
            send(ws, type="pause")
            state = next_text(ws)
            assert state["frames_dropped"] >= header.dropped
            assert state["frames_sent"] > header.frame_id - header.dropped
            send(ws, type="close")
            assert closed_with(ws)[0] == CloseCode.NORMAL
