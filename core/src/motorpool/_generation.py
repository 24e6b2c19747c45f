"""A request admitted on a model (``Run``) and its streaming face (``Generation``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator

import structlog

from motorpool._runs import RunProgress, run_events, run_to_result
from motorpool._slots import Ticket
from motorpool._states import ModelEntry, Ready
from motorpool.engine import Context
from motorpool.errors import EngineFailed, MotorpoolError
from motorpool.types import ErrorEvent, GenerationRequest, GenerationResult, StreamEvent

log = structlog.get_logger(__name__)


class Run:
    """One admitted request: owns its slot, its context and its user count on the model."""

    def __init__(
        self,
        *,
        on_end: Callable[[], None],
        entry: ModelEntry,
        ready: Ready,
        ticket: Ticket,
        request: GenerationRequest,
        context: Context,
        progress: RunProgress,
    ) -> None:
        self._on_end = on_end
        self.entry, self.ready, self.ticket = entry, ready, ticket
        self.request, self.context, self.progress = request, context, progress
        self._ended = False

    def __enter__(self) -> Run:
        try:
            self.ticket.wait(self.context.cancel_event)
            self.context.raise_if_cancelled()
        except BaseException:
            self.end()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.end()

    @property
    def ended(self) -> bool:
        """True once the slot and the model were given back (or are being given back)."""
        return self._ended

    def end(self) -> None:
        """Give back the slot (or queue place) and the model, once.

        While a worker thread still runs the engine for this request, the slot is held
        until it finishes; the wait happens on a helper thread, never on the caller's.
        """
        if self._ended:
            return
        self._ended = True
        worker = self.progress.worker
        if worker is not None and worker.is_alive() and worker is not threading.current_thread():
            self.context.cancel()
            threading.Thread(
                target=self._release_after, args=(worker,), name="motorpool-run-end", daemon=True
            ).start()
            return
        self._release()

    def _release_after(self, worker: threading.Thread) -> None:
        worker.join()
        self._release()

    def _release(self) -> None:
        self.ticket.release()
        self._on_end()

    def result(self) -> GenerationResult:
        """Run to completion."""
        result = run_to_result(
            self.entry.plugin, self.ready.model, self.request, self.context, self.progress
        )
        self.context.log.debug("request done", kind=result.kind)
        return result

    def events(self) -> Iterator[StreamEvent]:
        """Events ending in ``result``; raises typed errors."""
        return run_events(
            self.entry.plugin, self.ready.model, self.request, self.context, self.progress
        )


class Generation:
    """A streaming request: iterate it for events; ``cancel()`` from any thread.

    The iteration never raises for engine failures: it ends with an ``error`` event.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self.id = run.context.id
        self._events = _guarded(run)

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def cancel(self) -> None:
        """Stop the request; the stream ends with a ``cancelled`` error event."""
        self._run.context.cancel()

    def close(self) -> None:
        """Stop iterating early and release the model (cancels the request)."""
        self._run.context.cancel()
        self._events.close()
        self._run.end()

    def __del__(self) -> None:
        # A stream dropped without being exhausted or closed must not hold its model.
        # This may run on any thread, inside any locked section: nothing here blocks.
        if not self._run.ended:
            self.close()


def _guarded(run: Run) -> Generator[StreamEvent]:
    """The run's events; failures become a final ``error`` event instead of an exception.

    A module function, not a method: the generator must not refer to its Generation, so
    that dropping the Generation frees it at once (and ``__del__`` releases the model).
    """
    try:
        with run:
            yield from run.events()
    except MotorpoolError as exc:
        yield ErrorEvent(error=exc.info())
    except Exception as exc:
        log.exception("stream failed", request_id=run.context.id)
        yield ErrorEvent(error=EngineFailed(f"{type(exc).__name__}: {exc}").info())
