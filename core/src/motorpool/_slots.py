"""A fair (first come, first served) limit on concurrent requests, with a bounded queue.

A request takes a :class:`Ticket` when it arrives (``Slots.reserve``), which fails at
once when the model is exclusive and busy or the queue is full, and waits on the ticket
when it is about to run. Arrival order, not wake-up order, decides who runs next.
"""

from __future__ import annotations

import threading
from collections import deque

from motorpool._lock import GuardedLock
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
        self._queue: deque[Ticket] = deque()
        self.lock = GuardedLock()

    @property
    def active(self) -> int:
        """Requests holding a slot now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._queue)

    def reserve(self, model: str) -> Ticket:
        """A place: a slot now, or in the queue; raises when busy (exclusive) or full."""
        with self.lock:
            ticket = Ticket(self, model)
            if self._active < self.capacity and not self._queue:
                self._active += 1
                ticket.granted = True
                return ticket
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
            self._queue.append(ticket)
            return ticket

    def acquire(self, model: str, cancel: threading.Event | None = None) -> Ticket:
        """Reserve and wait for a slot."""
        ticket = self.reserve(model)
        ticket.wait(cancel)
        return ticket

    def wait(self, ticket: Ticket, cancel: threading.Event | None) -> None:
        """Block until ``ticket`` holds a slot (see :meth:`Ticket.wait`)."""
        with self.lock:
            try:
                while not ticket.granted:
                    if self._queue and self._queue[0] is ticket and self._active < self.capacity:
                        self._queue.popleft()
                        self._active += 1
                        ticket.granted = True
                        self.lock.notify_all()
                        return
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"request for {ticket.model} cancelled while queued")
                    self.lock.wait(_CANCEL_POLL_S if cancel is not None else None)
            except BaseException:
                self._drop(ticket)
                raise

    def _drop(self, ticket: Ticket) -> None:
        """Under the lock: give back what the ticket holds, a slot or a queue place."""
        if ticket.granted:
            ticket.granted = False
            self._active -= 1
        elif ticket in self._queue:
            self._queue.remove(ticket)
        self.lock.notify_all()

    def release(self, ticket: Ticket) -> None:
        """Give back what ``ticket`` holds (see :meth:`Ticket.release`)."""
        with self.lock:
            self._drop(ticket)


class Ticket:
    """One request's claim on a model's slots. Release it exactly once, in any state."""

    def __init__(self, slots: Slots, model: str) -> None:
        self.slots = slots
        self.model = model
        self.granted = False
        self.released = False

    def wait(self, cancel: threading.Event | None = None) -> None:
        """Block until this ticket holds a slot; raises ``Cancelled`` if cancelled first."""
        self.slots.wait(self, cancel)

    def release(self) -> None:
        """Give back the slot or the queue place (idempotent)."""
        if self.released:
            return
        if self.slots.lock.held_here():
            # A finalizer (the garbage collector closing a dropped stream) runs inside a
            # locked section of this thread: release from another one.
            threading.Thread(target=self.release, daemon=True).start()
            return
        self.released = True
        self.slots.release(self)
