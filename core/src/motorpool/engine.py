"""What a plugin receives from the host and hands back, beside the wire types.

These are plain classes, not pydantic models: they carry live objects (the engine's
handle, a cancellation flag, a progress callback) that never cross the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import structlog
from pydantic import BaseModel, JsonValue, ValidationError

from motorpool.errors import Cancelled, InvalidOptions
from motorpool.types import (
    Capability,
    ControlInput,
    FrameBatch,
    GenerationRequest,
    ModelOrigin,
    ModelSpec,
    ProgressEvent,
    SeedFrame,
    SessionInfo,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

HandleT_co = TypeVar("HandleT_co", covariant=True)
OptionsT = TypeVar("OptionsT", bound=BaseModel)
ClosableT = TypeVar("ClosableT", bound="Closable")

ProgressSink = Callable[[ProgressEvent], None]


class Closable(Protocol):
    """A loaded engine that frees what it holds when closed."""

    def close(self) -> None:
        """Free the engine's memory and handles."""
        ...


def _ignore_progress(_event: ProgressEvent) -> None:
    """Progress goes nowhere when nobody listens."""


class Context:
    """One operation (a load, a generation, a session) as the plugin sees it.

    Plugins poll :attr:`cancelled` between tokens / steps / download chunks and stop
    promptly, and call :meth:`progress` for long stages.
    """

    def __init__(
        self,
        operation_id: str,
        *,
        cancel_event: threading.Event | None = None,
        on_progress: ProgressSink = _ignore_progress,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.id = operation_id
        self._cancel_event = cancel_event or threading.Event()
        self._on_progress = on_progress
        self.log: FilteringBoundLogger = log or structlog.get_logger("motorpool.engine")

    @property
    def cancel_event(self) -> threading.Event:
        """The flag behind :attr:`cancelled`, for code that waits on it."""
        return self._cancel_event

    @property
    def cancelled(self) -> bool:
        """True once someone asked this operation to stop."""
        return self._cancel_event.is_set()

    def cancel(self) -> None:
        """Ask the operation to stop; the plugin notices at its next check."""
        self._cancel_event.set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~motorpool.errors.Cancelled` if the operation was cancelled."""
        if self._cancel_event.is_set():
            raise Cancelled(f"operation {self.id} was cancelled")

    def progress(self, stage: str, step: int, total: int | None = None) -> None:
        """Report a step of a long stage (``download``, ``load``, ``denoise``, ``encode``)."""
        self._on_progress(ProgressEvent(stage=stage, step=step, total=total))

    def load_uninterruptible(self, name: str, load: Callable[[], ClosableT]) -> ClosableT:
        """Run ``load`` (a load of ``name`` that cannot be interrupted) as one ``load`` step.

        Raises :class:`~motorpool.errors.Cancelled` before ``load`` runs if the operation
        was cancelled, and after it, closing what it returned, if it was cancelled
        meanwhile; reports ``load`` progress 0 of 1 before and 1 of 1 after.
        """
        self.raise_if_cancelled()
        self.progress("load", 0, 1)
        model = load()
        if self.cancelled:  # the load itself could not stop; drop its result
            model.close()
            raise Cancelled(f"loading {name} was cancelled")
        self.progress("load", 1, 1)
        return model


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """A model source after resolution: always a local path on disk."""

    spec: ModelSpec
    path: Path
    origin: ModelOrigin
    repo_id: str | None = None
    revision: str | None = None

    def options(self, model: type[OptionsT]) -> OptionsT:
        """Validate ``spec.options`` against the plugin's options model.

        Raises :class:`~motorpool.errors.InvalidOptions` naming each bad field.
        """
        return parse_options(model, self.spec.options)

    def size_bytes(self) -> int:
        """Bytes on disk of the file, or of every file below the folder."""
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def parse_options(model: type[OptionsT], options: Mapping[str, JsonValue]) -> OptionsT:
    """Validate plugin options, turning pydantic's error into a typed, readable one."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(options)'}: {err['msg']}"
            for err in exc.errors()
        )
        allowed = ", ".join(sorted(model.model_fields))
        raise InvalidOptions(
            f"invalid model options: {problems}", hint=f"accepted options: {allowed}"
        ) from exc


@dataclass(frozen=True, slots=True)
class LoadedModel(Generic[HandleT_co]):
    """What ``motorpool_load`` returns: the engine's handle and how the host may use it."""

    handle: HandleT_co
    """The plugin's own object (a ``Llama``, a pipeline); the host never touches it."""
    capabilities: frozenset[Capability]
    memory_bytes: int = 0
    """Resident size, when the plugin can tell; the estimate is used otherwise."""
    max_concurrency: int = 1
    """Requests the engine may run at once; more wait in a fair queue."""
    exclusive: bool = False
    """One user at a time (a world model); others get ``ModelBusy`` instead of waiting."""
    details: Mapping[str, JsonValue] = field(default_factory=dict[str, JsonValue])
    """Facts shown to users (context length, dtype, device)."""


@dataclass(frozen=True, slots=True)
class TinyModel:
    """A model small enough to build in seconds, for ``motorpool check`` and conformance.

    It comes with what exercises it: a ``request`` it answers, or for a world model the
    ``seed`` image a session opens on.
    """

    spec: ModelSpec
    request: GenerationRequest | None = None
    """A request the tiny model answers."""
    seed: SeedFrame | None = None
    """For a world model: an image to open a session on."""

    def __post_init__(self) -> None:
        if (self.request is None) == (self.seed is None):
            raise ValueError("a TinyModel has a request or a seed, exactly one of them")


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A batch generated but not yet encoded.

    The host calls ``encode`` off the thread that steps the engine, so the next step
    overlaps this batch's JPEG encoding. It runs beside later steps and may run after the
    session's ``close``: it must own what it reads (no buffer the engine reuses).
    """

    encode: Callable[[], FrameBatch]


class InteractiveSession(Protocol):
    """An open session on a world model (returned by ``motorpool_open_session``).

    The host calls these from one thread at a time, and ``step`` always from the same one.
    """

    @property
    def info(self) -> SessionInfo:
        """Frame size, frames per step, the model's frame rate and context length."""
        ...

    def step(self, control: ControlInput) -> FrameBatch | PendingBatch:
        """Generate the next batch of frames under the given control input.

        Return the batch encoded, or a :class:`PendingBatch` to have it encoded off the
        stepping thread.
        """
        ...

    def reset(self) -> None:
        """Return to the seed frame and clear the model's context."""
        ...

    def set_prompt(self, prompt: str) -> None:
        """Change the text conditioning; raise ``UnsupportedCapability`` if the model has none."""
        ...

    def close(self) -> None:
        """Release everything the session holds."""
        ...
