"""A fair (first come, first served) limit on concurrent requests, with a bounded queue."""

from __future__ import annotations

import threading
from collections import deque

from motorpool.errors import Cancelled, ModelBusy, QueueFull

_CANCEL_POLL_S = 0.05


class Slots:
    """``capacity`` requests run at once; up to ``max_waiting`` more wait in arrival order.

    An ``exclusive`` model has one slot and no queue: a second user is told it is busy.
    """

    def __init__(self, capacity: int, *, max_waiting: int, exclusive: bool = False) -> None:
        self.capacity = 1 if exclusive else max(1, capacity)
        self.max_waiting = 0 if exclusive else max_waiting
        self.exclusive = exclusive
        self._active = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def active(self) -> int:
        """Requests holding a slot now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._queue)

    def acquire(self, model: str, cancel: threading.Event | None = None) -> None:
        """Take a slot, waiting in turn; raise when busy, full, or cancelled while waiting."""
        with self._changed:
            if self._active < self.capacity and not self._queue:
                self._active += 1
                return
            if self.exclusive:
                raise ModelBusy(
                    f"{model} is exclusive and in use",
                    hint="wait for the current session or request to end",
                )
            if len(self._queue) >= self.max_waiting:
                raise QueueFull(
                    f"{model} has {len(self._queue)} requests waiting already",
                    hint="retry later, or raise MOTORPOOL_MAX_QUEUE",
                )
            ticket = object()
            self._queue.append(ticket)
            try:
                while not (self._queue[0] is ticket and self._active < self.capacity):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"request for {model} cancelled while queued")
                    self._changed.wait(_CANCEL_POLL_S if cancel is not None else None)
            except BaseException:
                self._queue.remove(ticket)
                self._changed.notify_all()
                raise
            self._queue.popleft()
            self._active += 1
            self._changed.notify_all()

    def release(self) -> None:
        """Give a slot back and wake the next in line."""
        with self._changed:
            self._active -= 1
            self._changed.notify_all()
