"""The host: discovered plugins, the models they loaded, and the requests running on them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import structlog

from motorpool._catalog import Catalog
from motorpool._discovery import discover, parse_allow_list
from motorpool._events import EventBus, Listener
from motorpool._generation import Generation, Run
from motorpool._lifecycle import Models, model_id_of
from motorpool._logging import configure_logging
from motorpool._plugin import GENERATION_HOOKS, SESSION_HOOKS, Plugin
from motorpool._runs import RunProgress, guarded, required_capability
from motorpool._session import Session, new_session_id
from motorpool._settings import Settings
from motorpool._states import STATUS, ModelEntry, Ready
from motorpool.engine import Context, TinyModel
from motorpool.errors import EngineFailed, InvalidRequest, ModelNotReady, UnsupportedCapability
from motorpool.hardware import hardware_report, physical_memory
from motorpool.types import (
    Capability,
    GenerationRequest,
    GenerationResult,
    HardwareReport,
    HostProgressEvent,
    ModelInfo,
    ModelSpec,
    PluginInfo,
    PluginProbe,
    ProgressEvent,
    SeedFrame,
    SessionConfig,
)

log = structlog.get_logger(__name__)

DEFAULT_BUDGET_FRACTION = 0.8
DEFAULT_CLOSE_WAIT_S = 5.0

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
        budget = self.settings.memory_budget
        self._bus = EventBus()
        self._models = Models(
            self.settings,
            int(physical_memory() * DEFAULT_BUDGET_FRACTION if budget is None else budget),
            self._bus,
            lambda model_id, load_id: self._progress_sink(model_id, "load", load_id, None),
        )
        self._runs: dict[str, Context] = {}  # single dict operations are atomic: no lock
        log.debug("host ready", plugins=self._catalog.loaded_names, budget=self._models.budget)

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
        return self._models.budget

    @property
    def aliases(self) -> Mapping[str, ModelSpec]:
        """Models named in the models file."""
        return self._catalog.aliases

    def spec(self, model: str | ModelSpec) -> ModelSpec:
        """The spec a name stands for: a loaded model, an alias, ``plugin:source`` or a source."""
        if isinstance(model, ModelSpec):
            return model
        return self._models.spec_of(model) or self._catalog.spec(model)

    def _owner(self, model: str | ModelSpec) -> tuple[ModelSpec, Plugin]:
        return self._catalog.owner(self.spec(model))

    # -- lifecycle -------------------------------------------------------------------------

    def load(
        self, model: str | ModelSpec, *, on_progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Load a model (or return it if loaded); blocks until ready. Raises on failure."""
        spec, plugin = self._owner(model)
        entry = self._models.ensure_ready(spec, plugin, on_progress, admit=False)
        return self._models.info_of(entry)

    def models(self) -> list[ModelInfo]:
        """Every model the host knows, with state, memory and idle time."""
        return self._models.infos()

    def model(self, model_id: str) -> ModelInfo:
        """One model's snapshot."""
        return self._models.info(model_id)

    def pin(self, model_id: str, *, pinned: bool = True) -> ModelInfo:
        """Pin (never evict or idle-unload) or unpin a model."""
        return self._models.pin(model_id, pinned=pinned)

    def unload(self, model_id: str) -> None:
        """Unload a model after its running requests finish; cancels a load in progress."""
        self._models.unload(model_id)

    def cancel_load(self, model_id: str) -> bool:
        """Cancel a load (download included); True when one was running."""
        return self._models.cancel_load(model_id)

    def unload_idle(self) -> list[str]:
        """Unload every model idle past its keep-alive; returns their ids."""
        return self._models.unload_idle()

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

        Unknown models, unsupported requests, load failures, a busy exclusive model and
        a full queue raise here, before any event; failures during generation arrive as
        the final ``error`` event.
        """
        return Generation(self._prepare(model, request, request_id, None, streaming=True))

    def cancel(self, request_id: str) -> bool:
        """Cancel a request (running, queued or waiting for its model) or a session."""
        context = self._runs.get(request_id)
        if context is None:
            return False
        context.cancel()
        return True

    def cancel_all(self) -> int:
        """Cancel every request and session in progress (loads go on); returns how many."""
        contexts = list(self._runs.values())
        for context in contexts:
            context.cancel()
        return len(contexts)

    def session(
        self,
        model: str | ModelSpec,
        *,
        seed: SeedFrame | bytes,
        config: SessionConfig | None = None,
        on_progress: ProgressCallback | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Open an interactive session on a world model (use it as a context manager).

        ``seed`` is the image the session starts from (PNG or JPEG bytes, or a
        :class:`~motorpool.types.SeedFrame`). ``on_progress`` hears the stages before the
        first frame: the model's download and load when this session loads it, then the
        engine's warm-up. ``session_id`` (default: a new one) makes the opening itself
        cancellable by :meth:`cancel` while it waits for the model.
        """
        if isinstance(seed, bytes):
            seed = SeedFrame.of(seed)
        spec, plugin = self._owner(model)
        model_id = model_id_of(spec, plugin)
        session_id = session_id or new_session_id()
        context = self._register(
            Context(
                session_id,
                on_progress=self._progress_sink(model_id, "session", session_id, on_progress),
                log=log.bind(model=model_id, plugin=plugin.name, session_id=session_id),
            )
        )
        entry = self._admit(spec, plugin, context, on_progress)  # download and load stages
        try:
            ready = _ready(entry, Capability.WORLD)
            ticket = ready.slots.acquire(entry.id, context.cancel_event)
        except BaseException:
            self._end(entry, session_id)
            raise
        config = config or SessionConfig()
        try:
            engine = guarded(
                plugin, lambda: plugin.open_session(ready.model, config, seed, context)
            )
        except BaseException:
            ticket.release()
            self._end(entry, session_id)
            raise

        def on_close() -> None:
            ticket.release()
            self._end(entry, session_id)

        return Session(engine, config, context, on_close)

    def _prepare(
        self,
        model: str | ModelSpec,
        request: GenerationRequest,
        request_id: str | None,
        on_progress: ProgressCallback | None,
        *,
        streaming: bool,
    ) -> Run:
        spec, plugin = self._owner(model)
        model_id = model_id_of(spec, plugin)
        run_id = request_id or f"req-{uuid.uuid4().hex[:12]}"
        progress = RunProgress(
            self._progress_sink(model_id, "generate", run_id, on_progress), streaming=streaming
        )
        context = self._register(
            Context(
                run_id,
                on_progress=progress.put,
                log=log.bind(model=model_id, plugin=plugin.name, request_id=run_id),
            )
        )
        entry = self._admit(spec, plugin, context)
        try:
            ready = _ready(entry, required_capability(request))
            ticket = ready.slots.reserve(entry.id)  # a busy or full model raises here
        except BaseException:
            self._end(entry, run_id)
            raise
        return Run(
            on_end=lambda: self._end(entry, run_id),
            entry=entry,
            ready=ready,
            ticket=ticket,
            request=request,
            context=context,
            progress=progress,
        )

    def _register(self, context: Context) -> Context:
        """Make an operation cancellable by id from the moment it starts."""
        if self._runs.setdefault(context.id, context) is not context:
            raise InvalidRequest(f"request id {context.id!r} is already running")
        return context

    def _admit(
        self,
        spec: ModelSpec,
        plugin: Plugin,
        context: Context,
        on_progress: ProgressCallback | None = None,
    ) -> ModelEntry:
        """The ready model with one more user; loads it first when needed.

        ``on_progress`` hears the stages of that load.
        """
        try:
            entry = self._models.ensure_ready(
                spec, plugin, on_progress, admit=True, cancel=context.cancel_event
            )
        except BaseException:
            self._runs.pop(context.id, None)
            raise
        if context.cancelled:  # cancelled while its model loaded
            self._end(entry, context.id)
            context.raise_if_cancelled()
        return entry

    def _end(self, entry: ModelEntry, operation_id: str) -> None:
        self._runs.pop(operation_id, None)
        self._models.release(entry)

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

    def close(self, *, wait_s: float = DEFAULT_CLOSE_WAIT_S) -> None:
        """Cancel every request, session and load, then unload every model.

        Requests get ``wait_s`` seconds to notice; a model still in use after that (a
        stream nobody iterates) is unloaded anyway. New work is refused meanwhile.
        """
        self.cancel_all()
        self._models.close(wait_s=wait_s)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _ready(entry: ModelEntry, capability: Capability) -> Ready:
    """The ready state of a model that can do ``capability``, or a typed error why not."""
    state = entry.state
    if not isinstance(state, Ready):
        raise ModelNotReady(f"{entry.id} is {STATUS[type(state)].value}")
    if capability not in state.model.capabilities:
        can = ", ".join(sorted(c.value for c in state.model.capabilities))
        raise UnsupportedCapability(
            f"{entry.id} cannot do {capability.value}; it can do: {can}",
            hint="send a request that matches the model, or choose another model",
        )
    hooks = SESSION_HOOKS if capability is Capability.WORLD else GENERATION_HOOKS
    if not entry.plugin.implements_any(*hooks):  # a plugin bug: it declares what it cannot run
        raise EngineFailed(
            f"plugin {entry.plugin.name!r} declares {capability.value} but implements "
            f"none of {', '.join(hooks)}"
        )
    return state
