"""A model's lifecycle as a union of small states, and the host's record of each model."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from motorpool._plugin import Plugin
from motorpool._slots import Slots
from motorpool.engine import Context, LoadedModel
from motorpool.errors import MotorpoolError
from motorpool.types import ModelSpec, ModelStatus


@dataclass(frozen=True, slots=True)
class Loading:
    """Resolving, downloading or loading; ``reserved`` bytes are held against the budget."""

    context: Context
    reserved: int
    done: threading.Event = field(default_factory=threading.Event)
    failure: list[MotorpoolError] = field(default_factory=list[MotorpoolError])
    """Set (once) before ``done`` when the load fails, for those who waited on it."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Loaded and serving requests through ``slots``."""

    model: LoadedModel[object]
    memory: int
    slots: Slots


@dataclass(frozen=True, slots=True)
class Failed:
    """The last load failed; the next request tries again."""

    error: MotorpoolError


@dataclass(frozen=True, slots=True)
class Unloading:
    """Draining requests, then releasing memory; no new request is admitted."""

    model: LoadedModel[object]
    memory: int
    done: threading.Event = field(default_factory=threading.Event)


ModelState = Loading | Ready | Failed | Unloading

STATUS = {
    Loading: ModelStatus.LOADING,
    Ready: ModelStatus.READY,
    Failed: ModelStatus.FAILED,
    Unloading: ModelStatus.UNLOADING,
}


@dataclass(slots=True)
class ModelEntry:
    """The host's record of one model. Mutated only under the host's lock."""

    id: str
    spec: ModelSpec
    plugin: Plugin
    state: ModelState
    keep_alive_s: float
    pinned: bool
    users: int = 0
    """Requests admitted (queued or running); an entry with users is never evicted."""
    last_used: float = field(default_factory=time.monotonic)

    @property
    def memory(self) -> int:
        """Bytes this entry holds against the budget."""
        match self.state:
            case Loading(reserved=reserved):
                return reserved
            case Ready(memory=memory) | Unloading(memory=memory):
                return memory  # an unloading model holds its memory until it is gone
            case Failed():
                return 0

    def evictable(self) -> bool:
        """Ready, unpinned and unused."""
        return isinstance(self.state, Ready) and not self.pinned and self.users == 0
