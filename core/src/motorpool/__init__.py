"""motorpool: a plugin-based engine host.

``Host`` discovers engine plugins (entry-point group ``motorpool.engines``), loads
models and runs requests on them; plugins implement the hooks in
:mod:`motorpool.hookspecs`, marked with :data:`hookimpl`.

``import motorpool`` stays cheap (a plugin module imports it at start-up): only the
hook marker is imported eagerly, every other name on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from motorpool._markers import hookimpl

if TYPE_CHECKING:
    from motorpool._generation import Generation
    from motorpool._host import Host
    from motorpool._session import Session
    from motorpool._settings import Settings
    from motorpool.engine import (
        Context,
        InteractiveSession,
        LoadedModel,
        PendingBatch,
        ResolvedSource,
        TinyModel,
    )
    from motorpool.types import (
        Capability,
        ChatMessage,
        ChatRequest,
        CompletionRequest,
        ImageRequest,
        ModelSpec,
        Sampling,
        VideoRequest,
    )

__version__ = "0.1.0"

_LAZY = {
    "Generation": "motorpool._generation",
    "Host": "motorpool._host",
    "Session": "motorpool._session",
    "Settings": "motorpool._settings",
    "Context": "motorpool.engine",
    "InteractiveSession": "motorpool.engine",
    "PendingBatch": "motorpool.engine",
    "LoadedModel": "motorpool.engine",
    "ResolvedSource": "motorpool.engine",
    "TinyModel": "motorpool.engine",
    "Capability": "motorpool.types",
    "ChatMessage": "motorpool.types",
    "ChatRequest": "motorpool.types",
    "CompletionRequest": "motorpool.types",
    "ImageRequest": "motorpool.types",
    "ModelSpec": "motorpool.types",
    "Sampling": "motorpool.types",
    "VideoRequest": "motorpool.types",
}

__all__ = [
    "Capability",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "Context",
    "Generation",
    "Host",
    "ImageRequest",
    "InteractiveSession",
    "LoadedModel",
    "ModelSpec",
    "PendingBatch",
    "ResolvedSource",
    "Sampling",
    "Session",
    "Settings",
    "TinyModel",
    "VideoRequest",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'motorpool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
