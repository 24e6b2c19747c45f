"""The host's event bus: lifecycle and progress events for any number of listeners."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from motorpool.types import HostEvent

log = structlog.get_logger(__name__)

Listener = Callable[[HostEvent], None]


class EventBus:
    """Synchronous fan-out. Listeners must be quick (hand the event to a queue)."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def publish(self, event: HostEvent) -> None:
        """Deliver to every listener; a failing listener is logged and the rest still run."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed", event_type=event.type)
