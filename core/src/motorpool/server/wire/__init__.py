"""Every type that crosses the server's wire, versioned by :data:`PROTOCOL_VERSION`.

``motorpool schema`` writes the JSON Schema of all of them, so frontends in any
language generate their types instead of writing them by hand.
"""

from __future__ import annotations

from pydantic import BaseModel

from motorpool.server.wire import errors, native, openai, sessions

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change to a request, response, event or message."""

WIRE_MODULES = (errors, openai, native, sessions)


def wire_models() -> list[type[BaseModel]]:
    """Every pydantic model defined by the wire modules, in a stable order."""
    return [
        value
        for module in WIRE_MODULES
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
        and not value.__name__.startswith("_")
    ]
