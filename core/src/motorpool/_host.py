"""The host: discovered plugins, the models they loaded, and the requests running on them.

State lives in one object with one lock. Heavy work (downloads, loads, unloads,
generation) never runs under the lock: lock -> plan -> unlock -> work -> lock -> apply.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

import structlog

from motorpool._catalog import Catalog
from motorpool._discovery import discover, parse_allow_list
from motorpool._events import EventBus, Listener
from motorpool._generation import Generation, Run
from motorpool._hardware import hardware_report, physical_memory
from motorpool._logging import configure_logging
from motorpool._memory import plan_room
from motorpool._plugin import Plugin
from motorpool._runs import RunProgress, required_capability
from motorpool._session import Session
from motorpool._settings import Settings
from motorpool._slots import Slots
from motorpool._sources import resolve
from motorpool._states import STATUS, Failed, Loading, ModelEntry, Ready, Unloading
from motorpool.engine import Context, LoadedModel, TinyModel
from motorpool.errors import (
    InvalidRequest,
    LoadFailed,
    ModelNotReady,
    MotorpoolError,
    UnknownModel,
    UnsupportedCapability,
)
from motorpool.types import (
    Capability,
    GenerationRequest,
    GenerationResult,
    HardwareReport,
    HostModelEvent,
    HostProgressEvent,
    ModelInfo,
    ModelSpec,
    ModelStatus,
    PluginInfo,
    PluginProbe,
    ProgressEvent,
    SeedFrame,
    SessionConfig,
)

log = structlog.get_logger(__name__)

DEFAULT_BUDGET_FRACTION = 0.8
_REAP_INTERVAL_S = 0.25

ProgressCallback = Callable[[ProgressEvent], None]


class Host:
    """An engine host: discovers plugins once, then loads models and runs requests.

    >>> host = Host()                                   # doctest: +SKIP
    >>> host.generate("qwen", ChatRequest(messages=[ChatMessage(role="user", content="Hi")]))

    Thread-safe. Close it (or use ``with Host() as host``) to unload every model.
    """

    def __init__(
        self, settings: Settings | None = None, *, plugins: Mapping[str, object] | None = None
    ) -> None:
        """Discover plugins (``MOTORPOOL_PLUGINS`` filters them) and read the models file.

        :param plugins: extra plugin objects to register by name, beside entry points.
        """
        self.settings = settings or Settings()
        if not structlog.is_configured():  # structlog's default prints debug lines to stdout
            configure_logging(self.settings.log_level, self.settings.log_format)
        found = discover(
            allow=parse_allow_list(self.settings.plugins),
            strict=self.settings.strict_plugins,
            extra=plugins,
        )
        self._catalog = Catalog(found, self.settings.models_path)
        self._budget = int(
            self.settings.memory_budget
            if self.settings.memory_budget is not None
            else physical_memory() * DEFAULT_BUDGET_FRACTION
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, ModelEntry] = {}
        self._runs: dict[str, Context] = {}
        self._bus = EventBus()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        log.debug("host ready", plugins=self._catalog.loaded_names, budget=self._budget)

    # -- plugins and specs ---------------------------------------------------------------

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every entry point found, with its state (loaded / disabled / failed) and reason."""
        return self._catalog.records()

    def probe(self, *, deep: bool = False) -> list[PluginProbe]:
        """Ask every loaded plugin what it can do here; a failing probe is reported, not raised."""
        return self._catalog.probe(deep=deep)

    def tiny_model(self, plugin: str, directory: Path) -> TinyModel | None:
        """Have a plugin build its tiny model in ``directory`` (``None`` if it cannot)."""
        return self._catalog.plugin(plugin).tiny_model(directory)

    def hardware(self) -> HardwareReport:
        """CPU, memory and accelerators of this machine."""
        return hardware_report()

    @property
    def memory_budget(self) -> int:
        """Bytes of models the host keeps loaded at once."""
        return self._budget

    @property
    def aliases(self) -> Mapping[str, ModelSpec]:
        """Models named in the models file."""
        return self._catalog.aliases

    def spec(self, model: str | ModelSpec) -> ModelSpec:
        """The spec a name stands for: a loaded model, an alias, ``plugin:source`` or a source."""
        if isinstance(model, ModelSpec):
            return model
        with self._lock:
            entry = self._models.get(model)
            if entry is not None:
                return entry.spec
        return self._catalog.spec(model)

    # -- lifecycle -------------------------------------------------------------------------

    def load(
        self, model: str | ModelSpec, *, on_progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Load a model (or return it if loaded); blocks until ready. Raises on failure."""
        spec, plugin = self._catalog.owner(self.spec(model))
        entry = self._ensure_ready(spec, plugin, on_progress, admit=False)
        return self._info(entry)

    def models(self) -> list[ModelInfo]:
        """Every model the host knows, with state, memory and idle time."""
        with self._lock:
            return [self._info(entry) for entry in self._models.values()]

    def model(self, model_id: str) -> ModelInfo:
        """One model's snapshot."""
        with self._lock:
            return self._info(self._entry(model_id))

    def pin(self, model_id: str, *, pinned: bool = True) -> ModelInfo:
        """Pin (never evict or idle-unload) or unpin a model."""
        with self._lock:
            entry = self._entry(model_id)
            entry.pinned = pinned
            info = self._info(entry)
        self._bus.publish(HostModelEvent(model=info))
        return info

    def unload(self, model_id: str) -> None:
        """Unload a model after its running requests finish; cancels a load in progress."""
        info: ModelInfo | None = None
        with self._lock:
            entry = self._entry(model_id)
            match entry.state:
                case Ready(model=loaded, memory=memory):
                    entry.state = Unloading(loaded, memory)
                    info = self._info(entry)
                    pending = None
                case Loading(context=context, done=pending):
                    context.cancel()
                case Unloading(done=pending):
                    pass
                case Failed():
                    del self._models[model_id]
                    return
        if pending is not None:  # someone else finishes it; wait, then drop a failed load
            pending.wait()
            with self._lock:
                if self._models.get(model_id) is entry and isinstance(entry.state, Failed):
                    del self._models[model_id]
            return
        if info is not None:
            self._bus.publish(HostModelEvent(model=info))
        self._finish_unload(entry)

    def cancel_load(self, model_id: str) -> bool:
        """Cancel a load (download included); True when one was running."""
        with self._lock:
            entry = self._models.get(model_id)
            if entry is None or not isinstance(entry.state, Loading):
                return False
            entry.state.context.cancel()
            return True

    def unload_idle(self) -> list[str]:
        """Unload every model idle past its keep-alive; returns their ids."""
        now = time.monotonic()
        with self._lock:
            expired = [
                entry
                for entry in self._models.values()
                if entry.evictable() and 0 <= entry.keep_alive_s <= now - entry.last_used
            ]
            for entry in expired:
                assert isinstance(entry.state, Ready)
                entry.state = Unloading(entry.state.model, entry.state.memory)
        for entry in expired:
            log.info("unloading idle model", model=entry.id, keep_alive_s=entry.keep_alive_s)
            self._finish_unload(entry)
        return [entry.id for entry in expired]

    def _entry(self, model_id: str) -> ModelEntry:
        entry = self._models.get(model_id)
        if entry is None:
            raise UnknownModel(
                f"model {model_id!r} is not loaded",
                hint="loaded: " + (", ".join(self._models) or "none"),
            )
        return entry

    def _ensure_ready(
        self,
        spec: ModelSpec,
        plugin: Plugin,
        on_progress: ProgressCallback | None,
        *,
        admit: bool,
    ) -> ModelEntry:
        """Return the model's entry once ready, loading it if needed; ``admit`` counts a user."""
        model_id = spec.name or f"{plugin.name}:{spec.source}"
        waited = False  # after a load we ran or waited for, a failure is final for this call
        while True:
            loading: ModelEntry | None = None
            pending: threading.Event | None = None
            with self._lock:
                entry = self._models.get(model_id)
                match entry.state if entry is not None else None:
                    case Ready() if entry is not None:
                        _check_same_model(entry, spec)
                        entry.users += admit
                        entry.last_used = time.monotonic()
                        return entry
                    case Failed(error=error) if waited:
                        raise error
                    case Loading(done=done) | Unloading(done=done):
                        pending = done
                    case _:
                        loading = self._begin_load(model_id, spec, plugin, on_progress)
            if pending is not None:
                pending.wait()
            elif loading is not None:
                self._bus.publish(HostModelEvent(model=self._info(loading)))
                error = self._run_load(loading)
                if error is not None:
                    raise error
            waited = True

    def _begin_load(
        self, model_id: str, spec: ModelSpec, plugin: Plugin, on_progress: ProgressCallback | None
    ) -> ModelEntry:
        """Under the lock: a new Loading entry (replacing a failed one)."""
        load_id = f"load-{uuid.uuid4().hex[:12]}"
        context = Context(
            load_id,
            on_progress=self._progress_sink(model_id, "load", load_id, on_progress),
            log=log.bind(model=model_id, plugin=plugin.name, operation="load"),
        )
        keep_alive = (
            spec.keep_alive_s if spec.keep_alive_s is not None else self.settings.keep_alive_s
        )
        entry = ModelEntry(
            id=model_id,
            spec=spec,
            plugin=plugin,
            state=Loading(context, 0),
            keep_alive_s=keep_alive,
            pinned=spec.pinned,
        )
        self._models[model_id] = entry
        return entry

    def _run_load(self, entry: ModelEntry) -> MotorpoolError | None:
        """Outside the lock: resolve, make room, load; then record Ready or Failed.

        A client error (bad source, bad options: status < 500) leaves no entry behind;
        an engine failure stays visible as a failed model until the next attempt.
        """
        assert isinstance(entry.state, Loading)
        loading = entry.state
        context, plugin = loading.context, entry.plugin
        context.log.info("loading model", source=entry.spec.source)
        started = time.perf_counter()
        try:
            source = resolve(entry.spec, model_dirs=self.settings.model_dirs, context=context)
            estimate = plugin.estimate_memory(source)
            estimate = source.size_bytes() if estimate is None else estimate
            for victim in self._reserve(entry, estimate):
                self._finish_unload(victim)
            context.raise_if_cancelled()
            loaded = plugin.load(source, context)
            if not isinstance(cast(object, loaded), LoadedModel):  # a plugin bug, reported
                raise LoadFailed(f"{plugin.name} returned {type(loaded).__name__}, not LoadedModel")
            new_state: Ready | Failed = Ready(
                loaded,
                loaded.memory_bytes or estimate,
                Slots(
                    loaded.max_concurrency,
                    max_waiting=self.settings.max_queue,
                    exclusive=loaded.exclusive,
                ),
            )
        except MotorpoolError as exc:
            context.log.warning("load failed", code=exc.code, error=exc.message)
            new_state = Failed(exc)
        except Exception as exc:
            context.log.exception("load failed")
            error = LoadFailed(f"{plugin.name} could not load {entry.spec.source}: {exc}")
            error.__cause__ = exc
            new_state = Failed(error)
        with self._lock:
            entry.state = new_state
            entry.last_used = time.monotonic()
            info = self._info(entry)
            forget = isinstance(new_state, Failed) and new_state.error.is_client_error
            if forget and self._models.get(entry.id) is entry:
                del self._models[entry.id]
        loading.done.set()
        self._bus.publish(HostModelEvent(model=info))
        if isinstance(new_state, Failed):
            return new_state.error
        context.log.info(
            "model ready", seconds=round(time.perf_counter() - started, 3), memory=new_state.memory
        )
        self._start_reaper()
        return None

    def _reserve(self, entry: ModelEntry, needed: int) -> list[ModelEntry]:
        """Hold ``needed`` bytes for a load, marking idle models to evict (LRU) if required."""
        with self._lock:
            others = [e for e in self._models.values() if e is not entry]
            victims = plan_room(
                entry.id, others, needed, self._budget, self.settings.max_loaded_models
            )
            for victim in victims:
                assert isinstance(victim.state, Ready)
                log.info("evicting model", model=victim.id, for_model=entry.id)
                victim.state = Unloading(victim.state.model, victim.state.memory)
            assert isinstance(entry.state, Loading)
            entry.state = Loading(entry.state.context, needed, entry.state.done)
            return victims

    def _finish_unload(self, entry: ModelEntry) -> None:
        """Outside the lock: wait for the model's users, release it, forget it."""
        with self._lock:
            while entry.users:
                self._changed.wait()
            state = entry.state
        assert isinstance(state, Unloading)
        try:
            entry.plugin.unload(state.model)
        except Exception:
            log.exception("unload failed; dropping the model anyway", model=entry.id)
        with self._lock:
            if self._models.get(entry.id) is entry:
                del self._models[entry.id]
            info = self._info(entry).model_copy(update={"status": ModelStatus.UNLOADED})
        state.done.set()
        log.info("model unloaded", model=entry.id)
        self._bus.publish(HostModelEvent(model=info))

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
            max_concurrency=ready.model.max_concurrency if ready else 1,
            active_requests=ready.slots.active if ready else 0,
            queued_requests=ready.slots.waiting if ready else 0,
            idle_s=round(time.monotonic() - entry.last_used, 3) if entry.users == 0 else 0.0,
            error=state.error.info() if isinstance(state, Failed) else None,
            details=dict(ready.model.details) if ready else {},
        )

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None or self._stop.is_set():
                return
            self._reaper = threading.Thread(
                target=self._reap, name="motorpool-keep-alive", daemon=True
            )
        self._reaper.start()

    def _reap(self) -> None:
        while not self._stop.wait(_REAP_INTERVAL_S):
            try:
                self.unload_idle()
            except Exception:
                log.exception("idle unload failed")

    # -- requests --------------------------------------------------------------------------

    def generate(
        self,
        model: str | ModelSpec,
        request: GenerationRequest,
        *,
        request_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Run a request to completion, loading the model first if needed."""
        run = self._prepare(model, request, request_id, on_progress, streaming=False)
        with run:
            return run.result()

    def stream(
        self,
        model: str | ModelSpec,
        request: GenerationRequest,
        *,
        request_id: str | None = None,
    ) -> Generation:
        """Start a request and iterate its events; the last is ``result`` or ``error``.

        Unknown models, unsupported requests and load failures raise here, before any
        event; failures during generation arrive as the final ``error`` event.
        """
        return Generation(self._prepare(model, request, request_id, None, streaming=True))

    def cancel(self, request_id: str) -> bool:
        """Cancel a running or queued request; True when it was found."""
        with self._lock:
            context = self._runs.get(request_id)
        if context is None:
            return False
        context.cancel()
        return True

    def session(
        self, model: str | ModelSpec, *, seed: SeedFrame, config: SessionConfig | None = None
    ) -> Session:
        """Open an interactive session on a world model (use it as a context manager)."""
        spec, plugin = self._catalog.owner(self.spec(model))
        entry = self._ensure_ready(spec, plugin, None, admit=True)
        session_id = f"session-{uuid.uuid4().hex[:12]}"
        context = Context(
            session_id,
            on_progress=self._progress_sink(entry.id, "session", session_id, None),
            log=log.bind(model=entry.id, plugin=plugin.name, operation="session"),
        )
        try:
            ready = self._ready(entry, Capability.WORLD)
            ready.slots.acquire(entry.id, context.cancel_event)
        except BaseException:
            self._release(entry)
            raise
        try:
            engine = plugin.open_session(ready.model, config or SessionConfig(), seed, context)
        except BaseException:
            ready.slots.release()
            self._release(entry)
            raise

        def on_close() -> None:
            ready.slots.release()
            self._release(entry)

        return Session(engine, config or SessionConfig(), context, on_close)

    def _prepare(
        self,
        model: str | ModelSpec,
        request: GenerationRequest,
        request_id: str | None,
        on_progress: ProgressCallback | None,
        *,
        streaming: bool,
    ) -> Run:
        spec, plugin = self._catalog.owner(self.spec(model))
        entry = self._ensure_ready(spec, plugin, None, admit=True)
        try:
            ready = self._ready(entry, required_capability(request))
            run_id = request_id or f"req-{uuid.uuid4().hex[:12]}"
            progress = RunProgress(
                self._progress_sink(entry.id, "generate", run_id, on_progress),
                streaming=streaming,
            )
            context = Context(
                run_id,
                on_progress=progress.put,
                log=log.bind(model=entry.id, plugin=plugin.name, request_id=run_id),
            )
            with self._lock:
                if run_id in self._runs:
                    raise InvalidRequest(f"request id {run_id!r} is already running")
                self._runs[run_id] = context
        except BaseException:
            self._release(entry)
            raise
        return Run(
            on_end=lambda: self._release(entry, run_id),
            entry=entry,
            ready=ready,
            request=request,
            context=context,
            progress=progress,
        )

    def _ready(self, entry: ModelEntry, capability: Capability) -> Ready:
        state = entry.state
        if not isinstance(state, Ready):
            raise ModelNotReady(f"{entry.id} is {STATUS[type(state)].value}")
        if capability not in state.model.capabilities:
            can = ", ".join(sorted(c.value for c in state.model.capabilities))
            raise UnsupportedCapability(
                f"{entry.id} cannot do {capability.value}; it can do: {can}",
                hint="send a request that matches the model, or choose another model",
            )
        return state

    def _release(self, entry: ModelEntry, run_id: str | None = None) -> None:
        with self._lock:
            entry.users -= 1
            entry.last_used = time.monotonic()
            if run_id is not None:
                self._runs.pop(run_id, None)
            self._changed.notify_all()
            unload_now = entry.evictable() and entry.keep_alive_s == 0
            if unload_now:
                assert isinstance(entry.state, Ready)
                entry.state = Unloading(entry.state.model, entry.state.memory)
        if unload_now:
            self._finish_unload(entry)

    def _progress_sink(
        self,
        model_id: str,
        operation: Literal["load", "generate", "session"],
        operation_id: str,
        extra: ProgressCallback | None,
    ) -> Callable[[ProgressEvent], None]:
        def sink(event: ProgressEvent) -> None:
            if extra is not None:
                extra(event)
            self._bus.publish(
                HostProgressEvent(
                    model=model_id,
                    operation=operation,
                    operation_id=operation_id,
                    stage=event.stage,
                    step=event.step,
                    total=event.total,
                )
            )

        return sink

    # -- events and shutdown -------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Receive lifecycle and progress events; returns the unsubscribe function."""
        return self._bus.subscribe(listener)

    def close(self) -> None:
        """Cancel running requests and loads, unload every model, stop the keep-alive thread."""
        self._stop.set()
        with self._lock:
            contexts = list(self._runs.values())
        for context in contexts:
            context.cancel()
        for model_id in list(self._models):
            try:
                self.unload(model_id)
            except UnknownModel:
                continue  # unloaded meanwhile
        if self._reaper is not None:
            self._reaper.join()

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_same_model(entry: ModelEntry, spec: ModelSpec) -> None:
    """A name already loaded from another source or with other options is a conflict."""
    fields = {"plugin", "source", "revision", "files", "options"}
    if entry.spec.model_dump(include=fields) != spec.model_dump(include=fields):
        raise InvalidRequest(
            f"{entry.id} is already loaded from {entry.spec.source} with other settings",
            hint=f"unload {entry.id} first, or give this model another name",
        )
