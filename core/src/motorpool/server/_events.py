"""The native event stream: the host's lifecycle and progress events, and its log lines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

from pydantic import JsonValue, TypeAdapter, ValidationError

from motorpool.server.wire.native import LogEvent, ServerEvent
from motorpool.types import HostEvent

Listener = Callable[[ServerEvent | None], None]
MAX_QUEUED_EVENTS = 1024
_RESERVED = {"event", "level", "timestamp", "logger", "exc_info", "stack_info", "request_id"}
_JSON: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


class EventHub:
    """Fans host events and log lines out to the clients of ``GET /api/events``."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self._closed = False

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

    def close(self) -> None:
        """End every subscription, and those made later (the server is shutting down)."""
        with self._lock:
            self._closed = True
            listeners, self._listeners = self._listeners, ()
        for listener in listeners:
            listener(None)

    def subscribe(self) -> Subscription:
        """Receive events from now on (call it on the event loop that will read them)."""
        subscription = Subscription(self, asyncio.get_running_loop())
        with self._lock:
            if not self._closed:
                self._listeners = (*self._listeners, subscription.listener)
                return subscription
        subscription.listener(None)  # closed: it ends at once
        return subscription

    def unsubscribe(self, listener: Listener) -> None:
        """Stop delivering to ``listener``."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x != listener)  # bound methods

    async def stream(self) -> AsyncIterator[ServerEvent]:
        """Events from the first iteration on (see :meth:`subscribe` to start sooner)."""
        with self.subscribe() as events:
            async for event in events:
                yield event


class Subscription:
    """Events of one client, queued on its loop; when it falls behind, the oldest go.

    Registered as soon as it is made, so nothing published after that is missed; use it
    as a context manager to unsubscribe.
    """

    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self._loop = loop
        self._queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue(MAX_QUEUED_EVENTS)

    def listener(self, event: ServerEvent | None) -> None:
        """Called from any thread; ``None`` ends the subscription."""
        try:
            self._loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the loop has closed: the server is going away
            return

    def _put(self, event: ServerEvent | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._hub.unsubscribe(self.listener)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ServerEvent:
        """The next event; ends when the hub closes."""
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


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
