"""From the host's threads to the event loop: iterate a blocking iterator without blocking.

A producer thread drains the iterator into a bounded buffer; the loop is woken once per
burst (not once per item), so a fast token stream costs a few microseconds per token.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

import anyio
import anyio.to_thread
from starlette.types import Receive

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_BUFFER = 256
_POLL_S = 0.1


class _Channel(Generic[T]):
    """A bounded single-producer, single-consumer buffer from a thread to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._loop = loop
        self._items: deque[T] = deque()
        self._room = threading.Semaphore(capacity)
        self._wake = asyncio.Event()
        self._signalled = False
        self._done = False
        self.stopped = threading.Event()

    def put(self, item: T) -> bool:
        """Called by the producer; False once the consumer has gone."""
        while not self._room.acquire(timeout=_POLL_S):
            if self.stopped.is_set():
                return False
        if self.stopped.is_set():
            return False
        self._items.append(item)
        self._signal()
        return True

    def finish(self) -> None:
        """Called by the producer after its last item."""
        self._done = True
        self._signal()

    def _signal(self) -> None:
        if not self._signalled:
            self._signalled = True
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed under us: nobody is listening
                self.stopped.set()

    async def drain(self) -> AsyncIterator[T]:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._signalled = False  # before draining: an item put from now on signals again
            while self._items:
                item = self._items.popleft()
                self._room.release()
                yield item
            if self._done and not self._items:
                return


async def iterate_in_thread(
    items: Iterator[T],
    *,
    on_stop: Callable[[], None],
    finish: Callable[[], None],
    name: str,
    capacity: int = DEFAULT_BUFFER,
) -> AsyncIterator[T]:
    """Yield ``items`` (a blocking iterator) as they come.

    If the consumer stops early, ``on_stop`` is called at once (to cancel the work) and
    ``finish`` runs on the producer thread once the iterator is let go.
    """
    channel: _Channel[T] = _Channel(asyncio.get_running_loop(), capacity)

    def produce() -> None:
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
    try:
        async for item in channel.drain():
            yield item
    finally:
        if not channel.stopped.is_set():
            channel.stopped.set()
            on_stop()


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
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await wait_for_disconnect(receive)
            on_disconnect()

        group.start_soon(watch)
        results.append(await anyio.to_thread.run_sync(call, abandon_on_cancel=False))
        group.cancel_scope.cancel()  # an exception above cancels the watcher by itself
    return results[0]
