"""From the host's threads to the event loop: iterate a blocking iterator without blocking.

A producer thread drains the iterator into a bounded buffer; the loop is woken once per
burst (not once per item) and takes the burst whole, so a consumer can answer it with one
write: a fast token stream costs a few microseconds per token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Generic, TypeVar

import anyio
import anyio.to_thread
from starlette.types import Receive

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_BUFFER = 256
MAX_BURST = 32
"""Items handed over at most at once: bounds the latency a burst adds to its first item."""
MIN_WAKE_INTERVAL_S = 0.002
"""A fast producer wakes the loop at most this often, so its items travel in bursts (one
write each) and its thread is not interrupted for every item; an item that comes after a
pause is handed over at once."""
_POLL_S = 0.1


class _Channel(Generic[T]):
    """A bounded single-producer, single-consumer buffer from a thread to the loop.

    The deque's appends and pops are atomic, so the fast path takes no lock: the producer
    waits on ``_room`` only when the buffer is full. The loop woken is the one reading;
    items put before it starts reading wait in the buffer.
    """

    def __init__(self, capacity: int) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._room = threading.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._signalled = False
        self._last_wake = 0.0
        self._done = False
        self.stopped = threading.Event()

    def put(self, item: T) -> bool:
        """Called by the producer; False once the consumer has gone."""
        while len(self._items) >= self._capacity and not self.stopped.is_set():
            self._room.clear()
            if len(self._items) >= self._capacity:  # checked again: the loop may just have taken
                self._room.wait(_POLL_S)
        if self.stopped.is_set():
            return False
        self._items.append(item)
        self._signal()
        return True

    def finish(self) -> None:
        """Called by the producer after its last item."""
        self._done = True
        self._signal()

    def stop(self) -> None:
        """Called by the consumer when it goes: the producer's next ``put`` returns False."""
        self.stopped.set()
        self._room.set()

    def _signal(self) -> None:
        loop = self._loop
        if loop is None or self._signalled:  # no reader yet: it looks before it waits
            return
        self._signalled = True
        delay = self._last_wake + MIN_WAKE_INTERVAL_S - time.monotonic()
        try:
            if delay > 0:
                loop.call_soon_threadsafe(loop.call_later, delay, self._wake.set)
            else:
                loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop closed under us: nobody is listening
            self.stop()

    async def bursts(self) -> AsyncGenerator[list[T]]:
        """The items as they come, in lists of at most ``MAX_BURST``: what is there, no wait."""
        self._loop = asyncio.get_running_loop()
        items = self._items
        while True:
            self._signalled = False  # before draining: an item put from now on signals again
            while items:
                burst = [items.popleft() for _ in range(min(len(items), MAX_BURST))]
                if not self._room.is_set():
                    self._room.set()
                yield burst
            if self._done and not items:
                return
            await self._wake.wait()
            self._wake.clear()
            self._last_wake = time.monotonic()


class ThreadedStream(Generic[T]):
    """A blocking iterator drained by a thread from now on, read on the event loop in bursts.

    The thread starts at once, so it may start on a worker thread (the one that admitted a
    request, say): the engine then runs while the response is set up. The loop wakes once
    per burst (not once per item) and takes the burst whole, so a consumer can answer it
    with one write. Call :meth:`stop` when done reading, or on leaving early: ``on_stop``
    runs then (to cancel the work), and ``finish`` runs on the producer thread once the
    iterator is let go. Dropped unread, the stream stops itself.
    """

    def __init__(
        self,
        items: Iterator[T],
        *,
        on_stop: Callable[[], None],
        finish: Callable[[], None],
        name: str,
        capacity: int = DEFAULT_BUFFER,
    ) -> None:
        channel: _Channel[T] = _Channel(capacity)
        self._channel = channel
        self._on_stop = on_stop

        def produce() -> None:  # refers to the channel only: this object can be dropped
            try:
                for item in items:
                    if not channel.put(item):
                        break
            finally:
                try:
                    finish()
                finally:
                    channel.finish()

        threading.Thread(target=produce, name=name, daemon=True).start()

    def bursts(self) -> AsyncGenerator[list[T]]:
        """The items as they come, a list per burst; read once, on the event loop."""
        return self._channel.bursts()

    def stop(self) -> None:
        """Stop reading: the producer stops at its next item and ``on_stop`` runs (once)."""
        if not self._channel.stopped.is_set():
            self._channel.stop()
            self._on_stop()

    def __del__(self) -> None:
        # A stream dropped unread (its response never ran) must not hold the engine.
        self.stop()


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone (the request body must have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def call_until_disconnect(
    call: Callable[[], R], receive: Receive, on_disconnect: Callable[[], None]
) -> R:
    """Run a blocking call in a worker thread; ``on_disconnect`` if the client leaves first.

    The call itself still runs to its end (it should notice the cancellation quickly).
    """
    results: list[R] = []  # the task group's exit may swallow nothing, but pyright can't know
    failures: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await wait_for_disconnect(receive)
            on_disconnect()

        group.start_soon(watch)
        try:
            results.append(await anyio.to_thread.run_sync(call, abandon_on_cancel=False))
        except Exception as exc:  # noqa: BLE001 - raised below, as itself
            failures.append(exc)
        group.cancel_scope.cancel()
    if failures:  # outside the group, so a typed error is not wrapped in an ExceptionGroup
        raise failures[0]
    return results[0]
