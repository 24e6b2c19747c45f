"""A lock with its condition, that knows whether the current thread is inside it."""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Inside(threading.local):
    held = False


class GuardedLock:
    """``with lock:`` as usual, plus :meth:`held_here`.

    Finalizers (a stream the garbage collector closes) may run on a thread that is
    inside a locked section; they check :meth:`held_here` and hand their work to
    another thread rather than deadlock on a lock their own thread holds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._inside = _Inside()

    def __enter__(self) -> GuardedLock:
        self._lock.acquire()
        self._inside.held = True
        return self

    def __exit__(self, *_exc: object) -> None:
        self._inside.held = False
        self._lock.release()

    def held_here(self) -> bool:
        """True while the current thread is inside ``with lock:``."""
        return self._inside.held

    def wait(self, timeout: float | None = None) -> bool:
        """Inside the lock: wait for :meth:`notify_all` (as ``Condition.wait``)."""
        return self._changed.wait(timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Inside the lock: wait until ``predicate()`` (as ``Condition.wait_for``)."""
        return self._changed.wait_for(predicate, timeout)

    def notify_all(self) -> None:
        """Inside the lock: wake every waiter."""
        self._changed.notify_all()
