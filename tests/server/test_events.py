"""The native event stream (``GET /api/events``): typed server-sent events, live.

Each ``data:`` is a ``ServerEvent``: a model changed state, progress of a load or a
generation, or a log line. Text generation publishes no progress (only steps do).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest
from motorpool.server._events import MAX_QUEUED_EVENTS, EventHub
from motorpool.server.wire.native import LogEvent, ServerEvent
from motorpool.types import HostModelEvent, HostProgressEvent, ModelStatus
from pydantic import TypeAdapter

from tests.server.live import LiveServer

SERVER_EVENT: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
TIMEOUT_S = 5.0


class EventStream:
    """``GET /api/events`` read on a thread: every ``data:`` validated as a ``ServerEvent``."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self._events: queue.Queue[ServerEvent | BaseException] = queue.Queue()
        self.connected = threading.Event()
        self.seen: list[ServerEvent] = []
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._response: httpx.Response | None = None

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/api/events") as response:
                self._response = response
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line == ": connected":
                        self.connected.set()
                    elif line.startswith("data: "):
                        self._events.put(SERVER_EVENT.validate_json(line.removeprefix("data: ")))
                    else:
                        assert line == "" or line.startswith(":"), line
        except (httpx.StreamClosed, httpx.ReadError, httpx.RemoteProtocolError):
            pass  # closed by the test
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._events.put(exc)

    def start(self) -> EventStream:
        self._thread.start()
        assert self.connected.wait(TIMEOUT_S), "no ': connected' comment"
        return self

    def close(self) -> None:
        """Hang up: shut the socket down, which wakes the thread blocked reading it."""
        if self._response is not None and self._thread.is_alive():
            stream = self._response.extensions["network_stream"]
            with contextlib.suppress(OSError):
                stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        self._thread.join(TIMEOUT_S)
        assert not self._thread.is_alive(), "the event stream did not end"
        self._client.close()

    @property
    def ended(self) -> bool:
        """True once the server ended the stream (the reading thread returned)."""
        return not self._thread.is_alive()

    def until(self, condition: Callable[[ServerEvent], bool]) -> ServerEvent:
        """Read events (kept in ``seen``) until one matches."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no matching event within {TIMEOUT_S} s; saw {self.seen}")
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if isinstance(event, BaseException):
                raise event
            self.seen.append(event)
            if condition(event):
                return event


@contextmanager
def events(live: LiveServer, headers: dict[str, str] | None = None) -> Iterator[EventStream]:
    stream = EventStream(live.url, headers or {}).start()
    try:
        yield stream
    finally:
        stream.close()


def model_status(name: str, status: ModelStatus) -> Callable[[ServerEvent], bool]:
    return lambda e: (
        isinstance(e, HostModelEvent)
        and (e.model.id, e.model.status)
        == (
            name,
            status,
        )
    )


def request_log(path: str) -> Callable[[ServerEvent], bool]:
    return lambda e: (
        isinstance(e, LogEvent) and e.message == "request" and e.fields.get("path") == path
    )


# -------------------------------------------------------------------------------------------
# Loads, generations and log lines, as a client of the stream sees them
# -------------------------------------------------------------------------------------------


def test_a_load_streams_model_states_progress_and_logs(live: LiveServer) -> None:
    with events(live) as stream:
        loaded = httpx.post(f"{live.url}/api/models/load", json={"model": "tiny"})
        assert loaded.status_code == 200, loaded.text
        stream.until(model_status("tiny", ModelStatus.READY))
        stream.until(request_log("/api/models/load"))

    statuses = [
        e.model.status
        for e in stream.seen
        if isinstance(e, HostModelEvent) and e.model.id == "tiny"
    ]
    assert statuses[0] is ModelStatus.LOADING
    assert statuses[-1] is ModelStatus.READY
    progress = [e for e in stream.seen if isinstance(e, HostProgressEvent)]
    assert progress, "the load reported no progress"
    assert all(p.model == "tiny" and p.operation == "load" for p in progress)
    assert progress[-1].step == progress[-1].total
    messages = {e.message for e in stream.seen if isinstance(e, LogEvent)}
    assert {"loading model", "model ready"} <= messages
    (line,) = [e for e in stream.seen if request_log("/api/models/load")(e)]
    assert isinstance(line, LogEvent)
    assert line.level == "info"
    assert line.timestamp
    assert line.fields["method"] == "POST"
    assert line.fields["status"] == 200
    assert "request_id" not in line.fields  # bound context, not a field of the line


def test_a_failed_load_streams_the_failed_state(live: LiveServer) -> None:
    with events(live) as stream:
        failed = httpx.post(f"{live.url}/api/models/load", json={"model": "broken"})
        assert failed.status_code == 500
        failure = stream.until(model_status("broken", ModelStatus.FAILED))
    assert isinstance(failure, HostModelEvent)
    assert failure.model.error is not None
    assert failure.model.error.code == "load_failed"
    (line,) = [e for e in stream.seen if isinstance(e, LogEvent) and e.message == "load failed"]
    assert isinstance(line, LogEvent)
    assert line.level == "error"
    assert line.fields["model"] == "broken"


def test_a_streamed_chat_loads_its_model_and_is_logged(live: LiveServer) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
    }
    with events(live) as stream:
        with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        stream.until(model_status("tiny", ModelStatus.READY))  # loaded on first use
        stream.until(request_log("/v1/chat/completions"))
    assert any(model_status("tiny", ModelStatus.LOADING)(e) for e in stream.seen)
    # Text generation reports tokens, not steps: no 'generate' progress is published.
    assert not [
        e for e in stream.seen if isinstance(e, HostProgressEvent) and e.operation == "generate"
    ]


def test_image_steps_stream_as_progress_under_the_request_id(live: LiveServer) -> None:
    with events(live) as stream:
        made = httpx.post(
            f"{live.url}/v1/images/generations",
            json={"model": "tiny", "prompt": "a fox", "steps": 3},
            headers={"X-Request-ID": "img-events-1"},
        )
        assert made.status_code == 200, made.text
        last = stream.until(
            lambda e: isinstance(e, HostProgressEvent) and e.operation == "generate" and e.step == 3
        )
    steps = [
        e for e in stream.seen if isinstance(e, HostProgressEvent) and e.operation == "generate"
    ]
    assert [(e.stage, e.step, e.total) for e in steps] == [("denoise", i, 3) for i in (1, 2, 3)]
    assert {e.operation_id for e in steps} == {"img-events-1"}
    assert last.model == "tiny"


def test_every_listener_gets_every_event(live: LiveServer) -> None:
    with events(live) as first, events(live) as second:
        assert httpx.post(f"{live.url}/api/models/load", json={"model": "tiny"}).is_success
        first.until(model_status("tiny", ModelStatus.READY))
        second.until(model_status("tiny", ModelStatus.READY))
    assert [e for e in first.seen if isinstance(e, HostModelEvent)] == [
        e for e in second.seen if isinstance(e, HostModelEvent)
    ]


def test_the_stream_needs_the_api_key(live_factory: Callable[..., LiveServer]) -> None:
    live = live_factory(api_key="KEY")
    refused = httpx.get(f"{live.url}/api/events")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    with events(live, {"Authorization": "Bearer KEY"}) as stream:
        assert httpx.post(
            f"{live.url}/api/models/load",
            json={"model": "tiny"},
            headers={"Authorization": "Bearer KEY"},
        ).is_success
        stream.until(model_status("tiny", ModelStatus.READY))


def test_shutdown_ends_the_stream(live: LiveServer) -> None:
    with events(live) as stream:
        live.handler.begin_shutdown()
        stream.until(lambda e: isinstance(e, LogEvent) and e.message == "shutting down")
        deadline = time.monotonic() + TIMEOUT_S
        while not stream.ended:
            assert time.monotonic() < deadline, "the stream outlived the shutdown"
            time.sleep(0.01)
    late = httpx.get(f"{live.url}/api/events", timeout=TIMEOUT_S)  # ends at once too
    assert late.status_code == 200
    assert late.text == ": connected\n\n"


def test_events_validate_against_the_exported_union() -> None:
    """What the stream sends round-trips through the published ``ServerEvent`` union."""
    line = LogEvent(level="info", message="request", timestamp="t", fields={"status": 200})
    assert SERVER_EVENT.validate_json(line.model_dump_json()) == line
    assert json.loads(line.model_dump_json())["type"] == "log"


# -------------------------------------------------------------------------------------------
# The hub: a listener that falls behind loses the oldest events, never blocks the host
# -------------------------------------------------------------------------------------------


def test_a_slow_listener_keeps_the_newest_events() -> None:
    hub = EventHub()
    total = MAX_QUEUED_EVENTS + 10

    async def main() -> list[str]:
        stream = hub.stream()
        received: list[str] = []
        async with anyio.create_task_group() as group:

            async def read() -> None:
                async for event in stream:
                    assert isinstance(event, LogEvent)
                    received.append(event.message)

            group.start_soon(read)
            await anyio.sleep(0.05)  # the reader has subscribed and waits
            for i in range(total):  # a burst: the reader cannot run in between
                hub.publish(LogEvent(level="info", message=str(i), timestamp=""))
            await anyio.sleep(0.1)
            group.cancel_scope.cancel()
        return received

    received = anyio.run(main)
    assert 0 < len(received) <= MAX_QUEUED_EVENTS
    assert received[-1] == str(total - 1)  # the newest survive, the oldest went
    assert "0" not in received
    assert received == sorted(received, key=int)
    assert hub._listeners == ()  # the ended stream unsubscribed


def test_a_subscription_gets_what_is_published_before_its_first_read() -> None:
    """The route subscribes before it sends ': connected', so a client misses nothing."""
    hub = EventHub()

    async def main() -> tuple[list[str], list[str]]:
        with hub.subscribe():
            pass
        assert hub._listeners == ()  # leaving the block unsubscribed
        with hub.subscribe() as events:
            hub.publish(LogEvent(level="info", message="early", timestamp=""))
            hub.close()  # the server shuts down: the subscription ends after what it holds
            received = [e.message async for e in events if isinstance(e, LogEvent)]
        with hub.subscribe() as late:  # made after the close: ends at once
            too_late = [e.type async for e in late]
        return received, too_late

    assert anyio.run(main) == (["early"], [])
    assert hub._listeners == ()
