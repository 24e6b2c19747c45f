"""Model specs (what to load) and the host's public view of a model (what is loaded)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, JsonValue

from motorpool.types._base import Capability, ErrorInfo, Frozen


class ModelSpec(Frozen):
    """What to load: a plugin, a source, and the plugin's options.

    ``source`` is a local file or folder, or a Hugging Face repo id (``owner/name``,
    optionally prefixed ``hf:``). ``files`` narrows a hub download to matching names.
    """

    name: str | None = Field(default=None, min_length=1)
    """The alias the model is known by; defaults to ``plugin:source``."""
    plugin: str | None = None
    """``None`` asks every ready plugin whether it recognises the source."""
    source: str = Field(min_length=1)
    revision: str | None = None
    files: tuple[str, ...] = ()
    options: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    keep_alive_s: float | None = None
    """Idle seconds before unloading; ``None`` = the host default, negative = never."""
    pinned: bool = False
    """A pinned model is never evicted to make room for another."""
    preload: bool = False
    """Load at host start (``motorpool serve`` / ``motorpool ps``)."""


class ModelStatus(StrEnum):
    """The lifecycle states of a model."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"
    UNLOADED = "unloaded"
    """Only in events: the model is gone."""


class ModelInfo(Frozen):
    """A snapshot of one model the host knows about."""

    id: str
    plugin: str
    source: str
    status: ModelStatus
    capabilities: frozenset[Capability] = frozenset()
    memory_bytes: int = 0
    pinned: bool = False
    exclusive: bool = False
    max_concurrency: int = 1
    active_requests: int = 0
    queued_requests: int = 0
    idle_s: float | None = None
    error: ErrorInfo | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])


class ModelOrigin(StrEnum):
    """Where a resolved source came from."""

    LOCAL = "local"
    HUB = "hub"


class HostModelEvent(Frozen):
    """A model changed state (published on the host's event bus)."""

    type: Literal["model"] = "model"
    model: ModelInfo


class HostProgressEvent(Frozen):
    """A step of a load, a generation or a session (published on the host's event bus)."""

    type: Literal["progress"] = "progress"
    model: str
    operation: Literal["load", "generate", "session"]
    operation_id: str
    stage: str
    step: int
    total: int | None = None


HostEvent = Annotated[HostModelEvent | HostProgressEvent, Field(discriminator="type")]
