"""The native event stream: the host's lifecycle and progress events, and its log lines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

from pydantic import JsonValue, TypeAdapter, ValidationError

from motorpool.server.wire.native import LogEvent, ServerEvent
from motorpool.types import HostEvent

Listener = Callable[[ServerEvent], None]
MAX_QUEUED_EVENTS = 1024
_RESERVED = {"event", "level", "timestamp", "logger", "exc_info", "stack_info", "request_id"}
_JSON: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


class EventHub:
    """Fans host events and log lines out to the clients of ``GET /api/events``."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def publish(self, event: ServerEvent) -> None:
        """Deliver to every listener (each only queues it)."""
        for listener in self._listeners:
            listener(event)

    def on_host_event(self, event: HostEvent) -> None:
        """The host bus's listener."""
        if self._listeners:
            self.publish(event)

    def log_processor(
        self, _logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor: every log line at or above the configured level, as an event."""
        if self._listeners:
            self.publish(_log_event(method, event_dict))
        return event_dict

    async def stream(self) -> AsyncIterator[ServerEvent]:
        """Events from now on; when a client falls behind, the oldest are dropped."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ServerEvent] = asyncio.Queue(MAX_QUEUED_EVENTS)

        def put(event: ServerEvent) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

        def listener(event: ServerEvent) -> None:
            try:
                loop.call_soon_threadsafe(put, event)
            except RuntimeError:  # the loop has closed: the server is going away
                return

        with self._lock:
            self._listeners = (*self._listeners, listener)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)


def _log_event(method: str, event_dict: MutableMapping[str, Any]) -> LogEvent:
    fields: dict[str, JsonValue] = {}
    for key, value in event_dict.items():
        if key in _RESERVED:
            continue
        try:
            fields[key] = _JSON.validate_python(value)
        except ValidationError:
            fields[key] = repr(value)
    return LogEvent(
        level=str(event_dict.get("level", method)),
        message=str(event_dict.get("event", "")),
        logger=str(event_dict["logger"]) if "logger" in event_dict else None,
        timestamp=str(event_dict.get("timestamp", "")),
        fields=fields,
    )
