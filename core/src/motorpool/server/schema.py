"""The JSON Schema of every wire type, as ``motorpool schema`` prints it."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from motorpool.server.wire import PROTOCOL_VERSION, wire_models
from motorpool.server.wire.native import ServerEvent
from motorpool.server.wire.sessions import ClientMessage, ServerMessage
from motorpool.types.events import StreamEvent

UNIONS: dict[str, TypeAdapter[Any]] = {
    "ServerEvent": TypeAdapter[ServerEvent](ServerEvent),
    "ClientMessage": TypeAdapter[ClientMessage](ClientMessage),
    "ServerMessage": TypeAdapter[ServerMessage](ServerMessage),
    "StreamEvent": TypeAdapter[StreamEvent](StreamEvent),
}
"""The discriminated unions a frontend decodes, named as they appear in ``$defs``."""


def wire_schema() -> dict[str, Any]:
    """One document: every model under ``$defs``, the unions too, and the protocol version."""
    models = wire_models()
    _, document = models_json_schema(
        [(model, "serialization") for model in models], title="motorpool wire protocol"
    )
    defs: dict[str, Any] = document.setdefault("$defs", {})
    for name, adapter in UNIONS.items():
        schema = adapter.json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[name] = schema
    document["x-protocol-version"] = PROTOCOL_VERSION
    return document
