"""The loaded models: their lifecycle, the memory budget, keep-alive and unloading.

One lock guards every entry. Heavy work (downloads, loads, unloads) never runs under
it: lock -> plan -> unlock -> work -> lock -> apply.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import cast

import structlog

from motorpool._events import EventBus
from motorpool._lock import GuardedLock
from motorpool._memory import plan_room
from motorpool._plugin import Plugin
from motorpool._settings import Settings
from motorpool._slots import Slots
from motorpool._sources import resolve
from motorpool._states import STATUS, Failed, Loading, ModelEntry, Ready, Unloading
from motorpool.engine import Context, LoadedModel
from motorpool.errors import (
    Cancelled,
    HostClosing,
    InvalidRequest,
    LoadFailed,
    MemoryBudgetExceeded,
    MotorpoolError,
    UnknownModel,
)
from motorpool.types import HostModelEvent, ModelInfo, ModelSpec, ModelStatus, ProgressEvent

log = structlog.get_logger(__name__)

_REAP_INTERVAL_S = 0.25
_WAIT_POLL_S = 0.05

ProgressSink = Callable[[str, str], Callable[[ProgressEvent], None]]
"""Makes the progress sink of a load: (model id, load id) -> sink."""


class Models:
    """Every model the host knows, by id, each in one state of its lifecycle."""

    def __init__(
        self, settings: Settings, budget: int, bus: EventBus, progress_sink: ProgressSink
    ) -> None:
        self.settings = settings
        self.budget = budget
        self._bus = bus
        self._progress_sink = progress_sink
        self._lock = GuardedLock()
        self._entries: dict[str, ModelEntry] = {}
        self._closing = threading.Event()
        self._reaper: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------

    def spec_of(self, model_id: str) -> ModelSpec | None:
        """The spec of a model the host knows, if any."""
        with self._lock:
            entry = self._entries.get(model_id)
            return entry.spec if entry is not None else None

    def infos(self) -> list[ModelInfo]:
        """Every model's snapshot."""
        with self._lock:
            return [self._info(entry) for entry in self._entries.values()]

    def info(self, model_id: str) -> ModelInfo:
        """One model's snapshot."""
        with self._lock:
            return self._info(self._entry(model_id))

    def pin(self, model_id: str, *, pinned: bool) -> ModelInfo:
        """Pin (never evicted or idle-unloaded) or unpin a model."""
        with self._lock:
            entry = self._entry(model_id)
            entry.pinned = pinned
            info = self._info(entry)
        self._bus.publish(HostModelEvent(model=info))
        return info

    # -- loading ---------------------------------------------------------------------------

    def ensure_ready(
        self,
        spec: ModelSpec,
        plugin: Plugin,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        *,
        admit: bool,
        cancel: threading.Event | None = None,
    ) -> ModelEntry:
        """The model's entry once ready, loading it if needed; ``admit`` counts a user.

        ``cancel`` stops a wait for someone else's load (the load itself goes on).
        """
        model_id = model_id_of(spec, plugin)
        while True:
            loading: ModelEntry | None = None
            awaited: Loading | Unloading | None = None
            with self._lock:
                if self._closing.is_set():
                    raise HostClosing("the host is shutting down", hint="retry on another host")
                entry = self._entries.get(model_id)
                match entry.state if entry is not None else None:
                    case Ready() if entry is not None:
                        _check_same_model(entry, spec)
                        entry.users += admit
                        entry.last_used = time.monotonic()
                        return entry
                    case Loading() | Unloading() as state:
                        awaited = state
                    case _:  # unknown, or an earlier load failed: (re)load it
                        loading = self._begin_load(model_id, spec, plugin, on_progress)
            if loading is not None:
                self._bus.publish(HostModelEvent(model=self._info(loading)))
                error = self._run_load(loading)
                if error is not None:
                    raise error
            elif awaited is not None:
                _wait(awaited.done, cancel, model_id)
                if isinstance(awaited, Loading) and awaited.failure:
                    raise awaited.failure[0]  # the load we waited for failed or was cancelled

    def _begin_load(
        self,
        model_id: str,
        spec: ModelSpec,
        plugin: Plugin,
        on_progress: Callable[[ProgressEvent], None] | None,
    ) -> ModelEntry:
        """Under the lock: a new Loading entry (replacing a failed one)."""
        load_id = f"load-{uuid.uuid4().hex[:12]}"
        sink = self._progress_sink(model_id, load_id)

        def report(event: ProgressEvent) -> None:
            if on_progress is not None:
                on_progress(event)
            sink(event)

        context = Context(
            load_id,
            on_progress=report,
            log=log.bind(model=model_id, plugin=plugin.name, operation="load"),
        )
        keep_alive = spec.keep_alive_s
        entry = ModelEntry(
            id=model_id,
            spec=spec,
            plugin=plugin,
            state=Loading(context, 0),
            keep_alive_s=self.settings.keep_alive_s if keep_alive is None else keep_alive,
            pinned=spec.pinned,
        )
        self._entries[model_id] = entry
        return entry

    def _run_load(self, entry: ModelEntry) -> MotorpoolError | None:
        """Outside the lock: resolve, make room, load; then record Ready or Failed.

        A client error (bad source, bad options, cancelled: status < 500) leaves no entry
        behind; an engine failure stays visible as a failed model until the next attempt.
        """
        assert isinstance(entry.state, Loading)
        loading = entry.state
        context, plugin = loading.context, entry.plugin
        context.log.info("loading model", source=entry.spec.source)
        started = time.perf_counter()
        new_state: Ready | Failed = Failed(Cancelled("the load was interrupted"))
        try:
            new_state = self._load(entry, loading)
        except MotorpoolError as exc:
            context.log.warning("load failed", code=exc.code, error=exc.message)
            new_state = Failed(exc)
        except Exception as exc:
            context.log.exception("load failed")
            error = LoadFailed(f"{plugin.name} could not load {entry.spec.source}: {exc}")
            error.__cause__ = exc
            new_state = Failed(error)
        finally:  # also on KeyboardInterrupt: never leave a model 'loading' forever
            with self._lock:
                entry.state = new_state
                entry.last_used = time.monotonic()
                if isinstance(new_state, Failed):
                    loading.failure.append(new_state.error)
                info = self._info(entry)
                forget = isinstance(new_state, Failed) and new_state.error.is_client_error
                if forget and self._entries.get(entry.id) is entry:
                    del self._entries[entry.id]
            loading.done.set()
            self._bus.publish(HostModelEvent(model=info))
        if isinstance(new_state, Failed):
            return new_state.error
        context.log.info(
            "model ready", seconds=round(time.perf_counter() - started, 3), memory=new_state.memory
        )
        self._start_reaper()
        return None

    def _load(self, entry: ModelEntry, loading: Loading) -> Ready:
        context, plugin = loading.context, entry.plugin
        source = resolve(entry.spec, model_dirs=self.settings.model_dirs, context=context)
        estimate = plugin.estimate_memory(source)
        estimate = source.size_bytes() if estimate is None else estimate
        for victim in self._make_room(entry, estimate, context):
            self._finish_unload(victim)
        context.raise_if_cancelled()
        loaded = plugin.load(source, context)
        if not isinstance(cast("object", loaded), LoadedModel):  # a plugin bug, reported
            raise LoadFailed(f"{plugin.name} returned {type(loaded).__name__}, not LoadedModel")
        if context.cancelled:  # the engine finished anyway: give its memory back
            _unload_quietly(entry, loaded)
            raise Cancelled(f"loading {entry.id} was cancelled")
        parallel = min(loaded.max_concurrency, self.settings.parallel or loaded.max_concurrency)
        slots = Slots(parallel, max_waiting=self.settings.max_queue, exclusive=loaded.exclusive)
        return Ready(loaded, loaded.memory_bytes or estimate, slots)

    def _make_room(self, entry: ModelEntry, needed: int, context: Context) -> list[ModelEntry]:
        """Reserve ``needed`` bytes; while models that are unloading hold the memory, wait."""
        while True:
            try:
                return self._reserve(entry, needed)
            except MemoryBudgetExceeded:
                with self._lock:
                    leaving = [
                        e.state.done
                        for e in self._entries.values()
                        if isinstance(e.state, Unloading)
                    ]
                if not leaving:
                    raise
            while not any(done.is_set() for done in leaving):
                context.raise_if_cancelled()
                leaving[0].wait(_WAIT_POLL_S)

    def _reserve(self, entry: ModelEntry, needed: int) -> list[ModelEntry]:
        """Hold ``needed`` bytes for a load, marking idle models to evict (LRU) if required."""
        with self._lock:
            others = [e for e in self._entries.values() if e is not entry]
            victims = plan_room(
                entry.id, others, needed, self.budget, self.settings.max_loaded_models
            )
            for victim in victims:
                assert isinstance(victim.state, Ready)
                log.info("evicting model", model=victim.id, for_model=entry.id)
                victim.state = Unloading(victim.state.model, victim.state.memory)
            assert isinstance(entry.state, Loading)
            entry.state = replace(entry.state, reserved=needed)  # same done event and failure
            return victims

    # -- unloading -------------------------------------------------------------------------

    def release(self, entry: ModelEntry) -> None:
        """A user is done with the model (a request ended, a session closed)."""
        if self._lock.held_here():
            # A finalizer (the garbage collector closing a dropped stream) runs inside a
            # locked section of this very thread: finish the release on another one.
            threading.Thread(target=self.release, args=(entry,), daemon=True).start()
            return
        with self._lock:
            entry.users -= 1
            entry.last_used = time.monotonic()
            self._lock.notify_all()
            unload_now = entry.evictable() and entry.keep_alive_s == 0
            if unload_now:
                assert isinstance(entry.state, Ready)
                entry.state = Unloading(entry.state.model, entry.state.memory)
        if unload_now:
            self._finish_unload(entry)

    def unload(
        self, model_id: str, *, wait_s: float | None = None, missing_ok: bool = False
    ) -> None:
        """Unload a model after its running requests finish; cancels a load in progress.

        ``wait_s`` bounds the waits (shutdown): for a load to stop, for requests to end;
        after it an in-use model is unloaded anyway, and a load that ignores cancellation
        is left to finish on its own thread (its result is then dropped).
        """
        deadline = None if wait_s is None else time.monotonic() + wait_s
        first_look = True
        while True:
            with self._lock:
                entry = self._entries.get(model_id)
                if entry is None:
                    if first_look and not missing_ok:
                        self._entry(model_id)  # raises UnknownModel, naming the loaded ones
                    return  # gone, or went away while we waited
                first_look = False
                match entry.state:
                    case Ready(model=loaded, memory=memory):
                        entry.state = Unloading(loaded, memory)
                        break
                    case Loading(context=context, done=pending):
                        context.cancel()
                    case Unloading(done=pending):
                        pass
                    case Failed():
                        del self._entries[model_id]
                        return
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not pending.wait(remaining):
                log.warning("gave up waiting for a model", model=model_id, seconds=wait_s)
                return
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._finish_unload(entry, wait_s=remaining)

    def unload_idle(self) -> list[str]:
        """Unload every model idle past its keep-alive; returns their ids."""
        now = time.monotonic()
        with self._lock:
            expired = [
                entry
                for entry in self._entries.values()
                if entry.evictable() and 0 <= entry.keep_alive_s <= now - entry.last_used
            ]
            for entry in expired:
                assert isinstance(entry.state, Ready)
                entry.state = Unloading(entry.state.model, entry.state.memory)
        for entry in expired:
            log.info("unloading idle model", model=entry.id, keep_alive_s=entry.keep_alive_s)
            self._finish_unload(entry)
        return [entry.id for entry in expired]

    def cancel_load(self, model_id: str) -> bool:
        """Cancel a load (download included); True when one was running."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None or not isinstance(entry.state, Loading):
                return False
            entry.state.context.cancel()
            return True

    def _finish_unload(self, entry: ModelEntry, *, wait_s: float | None = None) -> None:
        """Outside the lock: wait for the model's users, release it, forget it."""
        self._bus.publish(HostModelEvent(model=self.info_of(entry)))
        with self._lock:
            if not self._lock.wait_for(lambda: entry.users == 0, timeout=wait_s):
                log.warning("unloading a model still in use", model=entry.id, users=entry.users)
            state = entry.state
        assert isinstance(state, Unloading)
        _unload_quietly(entry, state.model)
        with self._lock:
            if self._entries.get(entry.id) is entry:
                del self._entries[entry.id]
            info = self._info(entry).model_copy(update={"status": ModelStatus.UNLOADED})
        state.done.set()
        log.info("model unloaded", model=entry.id)
        self._bus.publish(HostModelEvent(model=info))

    def close(self, *, wait_s: float) -> None:
        """Refuse new loads, cancel loads, unload every model (waiting ``wait_s`` for users)."""
        self._closing.set()
        deadline = time.monotonic() + wait_s
        with self._lock:
            ids = list(self._entries)
        for model_id in ids:
            self.unload(model_id, wait_s=max(0.0, deadline - time.monotonic()), missing_ok=True)
        if self._reaper is not None:
            self._reaper.join()

    # -- helpers ---------------------------------------------------------------------------

    def info_of(self, entry: ModelEntry) -> ModelInfo:
        """An entry's snapshot, taken under the lock."""
        with self._lock:
            return self._info(entry)

    def _entry(self, model_id: str) -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None:
            raise UnknownModel(
                f"model {model_id!r} is not loaded",
                hint="loaded: " + (", ".join(self._entries) or "none"),
            )
        return entry

    def _info(self, entry: ModelEntry) -> ModelInfo:
        state = entry.state
        ready = state if isinstance(state, Ready) else None
        return ModelInfo(
            id=entry.id,
            plugin=entry.plugin.name,
            source=entry.spec.source,
            status=STATUS[type(state)],
            capabilities=ready.model.capabilities if ready else frozenset(),
            memory_bytes=entry.memory,
            pinned=entry.pinned,
            exclusive=ready.model.exclusive if ready else False,
            max_concurrency=ready.slots.capacity if ready else 1,
            active_requests=ready.slots.active if ready else 0,
            queued_requests=ready.slots.waiting if ready else 0,
            idle_s=round(time.monotonic() - entry.last_used, 3) if entry.users == 0 else 0.0,
            error=state.error.info() if isinstance(state, Failed) else None,
            details=dict(ready.model.details) if ready else {},
        )

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None or self._closing.is_set():
                return
            self._reaper = threading.Thread(
                target=self._reap, name="motorpool-keep-alive", daemon=True
            )
            self._reaper.start()  # under the lock: close() never sees it unstarted

    def _reap(self) -> None:
        while not self._closing.wait(_REAP_INTERVAL_S):
            try:
                self.unload_idle()
            except Exception:
                log.exception("idle unload failed")


def _wait(done: threading.Event, cancel: threading.Event | None, model_id: str) -> None:
    """Wait for someone else's load or unload; a cancelled request stops waiting."""
    while not done.wait(_WAIT_POLL_S if cancel is not None else None):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled while waiting for {model_id}")


def model_id_of(spec: ModelSpec, plugin: Plugin) -> str:
    """A model's id: its alias, or ``plugin:source``."""
    return spec.name or f"{plugin.name}:{spec.source}"


def _unload_quietly(entry: ModelEntry, model: LoadedModel[object]) -> None:
    try:
        entry.plugin.unload(model)
    except Exception:
        log.exception("unload failed; dropping the model anyway", model=entry.id)


def _check_same_model(entry: ModelEntry, spec: ModelSpec) -> None:
    """A name already loaded from another source or with other options is a conflict."""
    fields = {"plugin", "source", "revision", "files", "options"}
    if entry.spec.model_dump(include=fields) != spec.model_dump(include=fields):
        raise InvalidRequest(
            f"{entry.id} is already loaded from {entry.spec.source} with other settings",
            hint=f"unload {entry.id} first, or give this model another name",
        )
