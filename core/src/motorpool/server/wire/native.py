"""The native API's bodies (``/api/...``) and the events of ``GET /api/events``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from motorpool.types import (
    HardwareReport,
    HostModelEvent,
    HostProgressEvent,
    ModelInfo,
    ModelSpec,
    PluginInfo,
    PluginProbe,
)
from motorpool.types._base import Frozen


class VersionInfo(Frozen):
    """``GET /api/version``."""

    version: str
    protocol_version: int


class Health(Frozen):
    """``GET /health`` and ``GET /ready``."""

    status: Literal["ok", "ready", "starting", "closing"]
    detail: str | None = None


class PluginList(Frozen):
    """``GET /api/plugins``: every entry point with its state and reason."""

    plugins: tuple[PluginInfo, ...]


class ProbeResponse(Frozen):
    """``GET /api/probe``: this machine and what each plugin can do on it."""

    hardware: HardwareReport
    plugins: tuple[PluginProbe, ...]


class LoadRequest(Frozen):
    """``POST /api/models/load``: a name (alias, ``plugin:source``, source) or a full spec."""

    model: str | None = Field(default=None, min_length=1)
    spec: ModelSpec | None = None

    def target(self) -> str | ModelSpec:
        """What to load."""
        if (self.model is None) == (self.spec is None):
            raise ValueError("give exactly one of model and spec")
        return self.spec if self.spec is not None else str(self.model)


class ModelRef(Frozen):
    """Names one model the host knows (its id from ``GET /api/models``)."""

    model: str = Field(min_length=1)


class PinRequest(ModelRef):
    """``POST /api/models/pin``."""

    pinned: bool = True


class ModelListResponse(Frozen):
    """``GET /api/models``: models loading, ready, failed or unloading."""

    models: tuple[ModelInfo, ...]


class AliasListResponse(Frozen):
    """``GET /api/aliases``: the models file."""

    aliases: dict[str, ModelSpec]


class Unloaded(Frozen):
    """The response of ``POST /api/models/unload``."""

    model: str
    unloaded: bool


class CancelResponse(Frozen):
    """The response of ``POST /api/requests/{id}/cancel``."""

    request_id: str
    cancelled: bool
    """False when no request with that id was running."""


class LogEvent(Frozen):
    """A log line of the host, as ``GET /api/events`` streams it."""

    type: Literal["log"] = "log"
    level: str
    message: str
    logger: str | None = None
    timestamp: str
    fields: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])


ServerEvent = Annotated[HostModelEvent | HostProgressEvent | LogEvent, Field(discriminator="type")]
"""One ``data:`` of ``GET /api/events``: a model changed state, progress, or a log line."""
