"""Running one request on a plugin: generate or stream, whichever the plugin implements.

A plugin may implement ``motorpool_generate``, ``motorpool_stream`` or both; the host
derives the missing one. Every path yields zero or more non-terminal events and then
exactly one result, or raises a typed error.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import structlog

from motorpool._plugin import Plugin
from motorpool.engine import Context, LoadedModel
from motorpool.errors import Cancelled, EngineFailed, MotorpoolError
from motorpool.types import (
    Capability,
    ChatRequest,
    CompletionRequest,
    ErrorEvent,
    GenerationRequest,
    GenerationResult,
    ImageRequest,
    ImageResult,
    ProgressEvent,
    ResultEvent,
    StreamEvent,
    TextResult,
    VideoRequest,
    VideoResult,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

_RESULT_KIND: dict[str, type[GenerationResult]] = {
    "completion": TextResult,
    "chat": TextResult,
    "image": ImageResult,
    "video": VideoResult,
}


def required_capability(request: GenerationRequest) -> Capability:
    """The capability a model needs to answer ``request``."""
    match request:
        case CompletionRequest():
            return Capability.COMPLETION
        case ChatRequest():
            return Capability.CHAT
        case ImageRequest(init_image=None):
            return Capability.IMAGE
        case ImageRequest():
            return Capability.IMAGE_TO_IMAGE
        case VideoRequest(init_image=None):
            return Capability.VIDEO
        case VideoRequest():
            return Capability.IMAGE_TO_VIDEO


@dataclass(frozen=True, slots=True)
class _Finished:
    result: GenerationResult | None
    error: BaseException | None


class RunProgress:
    """Where a run's progress goes: to ``observe`` always, and into a queue while streaming.

    Progress arrives two ways: a plugin calls ``context.progress`` (this is its sink),
    or a streaming plugin yields ``ProgressEvent``; both reach ``observe`` exactly once.
    """

    def __init__(self, observe: Callable[[ProgressEvent], None], *, streaming: bool) -> None:
        self.observe = observe
        self.streaming = streaming
        self.events: queue.SimpleQueue[ProgressEvent | _Finished] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        """The thread running a generate-only plugin for a stream, while it runs."""

    def put(self, event: ProgressEvent) -> None:
        """The context's progress sink."""
        self.observe(event)
        if self.streaming:
            self.events.put(event)


def run_to_result(
    plugin: Plugin,
    model: LoadedModel[object],
    request: GenerationRequest,
    context: Context,
    progress: RunProgress,
) -> GenerationResult:
    """Answer ``request`` with one result (progress goes to ``progress.observe``)."""
    if plugin.implements("motorpool_generate"):
        result = guarded(plugin, lambda: plugin.generate(model, request, context))
        return _checked(plugin, request, result)
    for event in run_events(plugin, model, request, context, progress):
        if isinstance(event, ResultEvent):
            return event.result
    raise EngineFailed(f"plugin {plugin.name!r} ended its stream without a result")


def run_events(
    plugin: Plugin,
    model: LoadedModel[object],
    request: GenerationRequest,
    context: Context,
    progress: RunProgress,
) -> Iterator[StreamEvent]:
    """Non-terminal events, then one ``ResultEvent``; raises a typed error instead of the end.

    Stops within one event of cancellation: the plugin's generator is closed.
    """
    if not plugin.implements("motorpool_stream"):
        yield from _generate_in_thread(plugin, model, request, context, progress)
        return
    events = guarded(plugin, lambda: plugin.stream(model, request, context))
    try:
        while True:
            context.raise_if_cancelled()  # never step the engine once cancelled
            event = guarded(plugin, lambda: next(events, None))
            yield from _drain(progress)
            if context.cancelled:
                raise Cancelled(f"request {context.id} was cancelled")
            if event is None:
                raise EngineFailed(f"plugin {plugin.name!r} ended its stream without a result")
            if isinstance(event, ErrorEvent):
                raise MotorpoolError.from_info(event.error)
            if isinstance(event, ResultEvent):
                yield ResultEvent(result=_checked(plugin, request, event.result))
                return
            if isinstance(event, ProgressEvent):
                progress.observe(event)
            yield event
    finally:
        close = getattr(events, "close", None)  # a plain iterator has no close()
        if close is not None:
            try:
                close()
            except Exception:  # the engine's own clean-up failed: the run is over anyway
                log.exception("engine stream failed to close", plugin=plugin.name)


def _drain(progress: RunProgress) -> Iterator[ProgressEvent]:
    while not progress.events.empty():  # cheap on the hot path: usually empty
        item = progress.events.get_nowait()
        if isinstance(item, ProgressEvent):
            yield item


def _generate_in_thread(
    plugin: Plugin,
    model: LoadedModel[object],
    request: GenerationRequest,
    context: Context,
    progress: RunProgress,
) -> Iterator[StreamEvent]:
    """Stream a generate-only plugin: run it on a thread, yield its progress as it comes."""

    def work() -> None:
        try:
            result = run_to_result(plugin, model, request, context, progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, re-raised there
            progress.events.put(_Finished(None, exc))
        else:
            progress.events.put(_Finished(result, None))

    worker = threading.Thread(target=work, name=f"motorpool-run-{context.id}", daemon=True)
    progress.worker = worker
    worker.start()
    try:
        while True:
            item = progress.events.get()
            if context.cancelled:  # as in the stream path: stop at the next event, not the end
                raise Cancelled(f"request {context.id} was cancelled")
            if isinstance(item, ProgressEvent):
                yield item
                continue
            worker.join()  # it has handed over its outcome and is ending: a short wait
            if item.error is not None:
                raise item.error
            assert item.result is not None
            yield ResultEvent(result=item.result)
            return
    finally:
        # If the reader went away, the engine stops at its next check. Nobody waits for
        # it here (this may be the garbage collector's thread): the run keeps its slot
        # until the worker is done (see Run.end).
        context.cancel()


def guarded(plugin: Plugin, call: Callable[[], T]) -> T:
    """Call into a plugin; typed errors pass, anything else becomes ``EngineFailed``."""
    try:
        return call()
    except MotorpoolError:
        raise
    except Exception as exc:
        log.exception("engine raised", plugin=plugin.name)
        raise EngineFailed(f"{plugin.name} failed: {type(exc).__name__}: {exc}") from exc


def _checked(
    plugin: Plugin, request: GenerationRequest, result: GenerationResult
) -> GenerationResult:
    expected = _RESULT_KIND[request.kind]
    if not isinstance(result, expected):
        raise EngineFailed(
            f"plugin {plugin.name!r} answered a {request.kind} request with "
            f"{type(result).__name__}, not {expected.__name__}"
        )
    return result
