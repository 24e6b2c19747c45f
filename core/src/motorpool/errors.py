"""Typed errors. Every failure the host reports is one of these, with a stable code.

``status`` is the HTTP status a server maps the error to; ``hint`` says what to do.
Plugins raise them too: ``InvalidModel`` for a file that is not what they load,
``InvalidRequest`` for input their engine rejects, ``Cancelled`` when they stop early.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

from motorpool.types._base import ErrorInfo

__all__ = [
    "Cancelled",
    "DownloadFailed",
    "EngineFailed",
    "HostClosing",
    "InvalidModel",
    "InvalidOptions",
    "InvalidRequest",
    "LoadFailed",
    "MemoryBudgetExceeded",
    "ModelBusy",
    "ModelNotReady",
    "MotorpoolError",
    "NoMatchingPlugin",
    "PluginDiscoveryError",
    "PluginUnavailable",
    "QueueFull",
    "SourceNotAllowed",
    "SourceNotFound",
    "StorageFailed",
    "UnknownModel",
    "UnknownPlugin",
    "UnsupportedCapability",
]


class MotorpoolError(Exception):
    """Base of every error motorpool reports."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"

    @property
    def is_client_error(self) -> bool:
        """True for errors in the request (4xx), false for failures of the host or engine."""
        return self.status < 500  # noqa: PLR2004 - the HTTP boundary between the two

    def info(self) -> ErrorInfo:
        """The wire form of this error."""
        return ErrorInfo(code=self.code, message=self.message, hint=self.hint)

    @classmethod
    def from_info(cls, info: ErrorInfo) -> MotorpoolError:
        """Rebuild the typed error from its wire form (unknown codes stay generic)."""
        return _by_code().get(info.code, MotorpoolError)(info.message, hint=info.hint)


@cache
def _by_code() -> dict[str, type[MotorpoolError]]:
    found: dict[str, type[MotorpoolError]] = {}
    pending = [MotorpoolError]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.setdefault(sub.code, sub)
            pending.append(sub)
    return found


class InvalidRequest(MotorpoolError):
    """The request is malformed or out of range for this engine."""

    code = "invalid_request"
    status = 422


class InvalidOptions(InvalidRequest):
    """A model's load options do not match what its plugin accepts."""

    code = "invalid_options"


class UnsupportedCapability(InvalidRequest):
    """The model cannot do what was asked (a chat request to an image model)."""

    code = "unsupported_capability"
    status = 400


class ContextLengthExceeded(InvalidRequest):
    """The prompt does not fit in the model's context (its loaded context length)."""

    code = "context_length_exceeded"
    status = 400


class SessionExhausted(InvalidRequest):
    """A session's model has used its whole context and ``auto_reset`` is off."""

    code = "session_exhausted"


class UnknownModel(MotorpoolError):
    """No alias, loaded model or spec matches the name."""

    code = "unknown_model"
    status = 404


class UnknownPlugin(MotorpoolError):
    """No installed plugin has that name."""

    code = "unknown_plugin"
    status = 404


class SourceNotFound(MotorpoolError):
    """A local model path does not exist."""

    code = "source_not_found"
    status = 404


class SourceNotAllowed(MotorpoolError):
    """A local model path lies outside the configured model directories."""

    code = "source_not_allowed"
    status = 403


class DownloadFailed(MotorpoolError):
    """A hub download failed or the model is not cached while offline."""

    code = "download_failed"
    status = 502


class NoMatchingPlugin(MotorpoolError):
    """No ready plugin recognises the model source."""

    code = "no_matching_plugin"
    status = 422


class PluginUnavailable(MotorpoolError):
    """The plugin is installed but disabled or failed at discovery."""

    code = "plugin_unavailable"
    status = 409


class InvalidModel(MotorpoolError):
    """The source is not a model this plugin can load (wrong format, missing files)."""

    code = "invalid_model"
    status = 422


class LoadFailed(MotorpoolError):
    """The engine raised while loading the model."""

    code = "load_failed"
    status = 500


class ModelNotReady(MotorpoolError):
    """The model is failed or unloading; load it (again) first."""

    code = "model_not_ready"
    status = 409


class MemoryBudgetExceeded(MotorpoolError):
    """Loading would exceed the memory budget even after evicting idle models."""

    code = "memory_budget_exceeded"
    status = 507


class ModelBusy(MotorpoolError):
    """An exclusive model is in use by someone else."""

    code = "model_busy"
    status = 409


class QueueFull(MotorpoolError):
    """Too many requests are waiting for this model."""

    code = "queue_full"
    status = 503


class Cancelled(MotorpoolError):
    """The operation was cancelled before it finished."""

    code = "cancelled"
    status = 499


class StorageFailed(MotorpoolError):
    """A finished result could not be written or kept (a full disk, a read-only folder)."""

    code = "storage_failed"
    status = 507


class EngineFailed(MotorpoolError):
    """The engine raised during a generation."""

    code = "engine_error"
    status = 500


class HostClosing(MotorpoolError):
    """The host is shutting down and takes no new work."""

    code = "host_closing"
    status = 503


class PluginDiscoveryError(MotorpoolError):
    """Strict mode: a plugin failed to import or to register."""

    code = "plugin_failed"
    status = 500
