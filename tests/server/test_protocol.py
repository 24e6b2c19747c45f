"""The published contract: ``motorpool schema`` and the OpenAPI document match the code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from motorpool.server import PROTOCOL_VERSION, wire_models
from motorpool.server.schema import wire_schema
from motorpool.server.wire.errors import ErrorEnvelope

from tests.support import motorpool

WIRE_DEFS = (
    "ErrorEnvelope",
    "ChatCompletionRequest",
    "ServerEvent",
    "ClientMessage",
    "ServerMessage",
    "FrameBatchHeader",
    "StreamEvent",
)
ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
WITHOUT_ERRORS = {"/health", "/ready"}
"""Probes answer without auth or a body, so they declare no error responses."""


def test_schema_command_prints_the_wire_schema(home: Path) -> None:
    document = json.loads(motorpool("schema", home=home).stdout)
    assert document["x-protocol-version"] == PROTOCOL_VERSION
    assert set(WIRE_DEFS) <= set(document["$defs"])
    assert document == json.loads(json.dumps(wire_schema()))


def test_schema_command_writes_a_file(home: Path) -> None:
    target = home / "out" / "schema.json"
    target.parent.mkdir()
    result = motorpool("schema", "--output", str(target), home=home)
    assert result.stdout == ""
    document = json.loads(target.read_text(encoding="utf-8"))
    assert document["x-protocol-version"] == PROTOCOL_VERSION
    assert set(WIRE_DEFS) <= set(document["$defs"])


def test_every_wire_model_is_in_the_schema() -> None:
    defs = wire_schema()["$defs"]
    models = wire_models()
    assert len(models) == len({m.__name__ for m in models}), "wire model names must be unique"
    missing = [m.__name__ for m in models if m.__name__ not in defs]
    assert not missing


def test_every_ref_in_the_schema_resolves() -> None:
    document = wire_schema()
    defs = document["$defs"]
    refs = set(_refs(document))
    assert refs
    dangling = sorted(r for r in refs if r.removeprefix("#/$defs/") not in defs)
    assert not dangling


def test_the_unions_are_tagged_by_type() -> None:
    defs = wire_schema()["$defs"]
    for name in ("ServerEvent", "ClientMessage", "ServerMessage"):
        assert defs[name]["discriminator"]["propertyName"] == "type", name
        assert len(defs[name]["oneOf"]) >= 2, name


def test_the_error_envelope_schema() -> None:
    defs = wire_schema()["$defs"]
    assert defs["ErrorEnvelope"]["required"] == ["error"]
    assert {"code", "message", "type"} <= set(defs["ErrorBody"]["required"])


# -- OpenAPI -------------------------------------------------------------------------------


def http_routes(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    """(method, path, route) of every HTTP route of the app's schema, included routers too."""
    try:
        from fastapi.routing import iter_route_contexts  # noqa: PLC0415 - newer FastAPI
    except ImportError:
        contexts = [(route, getattr(route, "path", "")) for route in app.routes]
    else:
        contexts = [(c.original_route, c.path or "") for c in iter_route_contexts(app.routes)]
    for route, path in contexts:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods:
                yield method.lower(), path, route


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_openapi_lists_every_http_route(client: TestClient, openapi: dict[str, Any]) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    routes = {(method, path) for method, path, _ in http_routes(app)}
    assert len(routes) >= 20
    documented = {(method, path) for path, ops in openapi["paths"].items() for method in ops}
    assert routes == documented
    assert ("post", "/v1/chat/completions") in documented
    assert ("get", "/api/events") in documented


def test_every_route_documents_the_error_envelope(openapi: dict[str, Any]) -> None:
    undocumented: list[str] = []
    for path, operations in openapi["paths"].items():
        if path in WITHOUT_ERRORS:
            continue
        for method, operation in operations.items():
            errors = {
                code: response
                for code, response in operation["responses"].items()
                if int(code) >= 400
            }
            if not errors or not all(ENVELOPE_REF in json.dumps(r) for r in errors.values()):
                undocumented.append(f"{method.upper()} {path}")
            elif method == "post" and "422" not in errors:
                undocumented.append(f"{method.upper()} {path} (no 422)")
    assert not undocumented


def test_the_openapi_envelope_is_the_wire_envelope(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["ErrorEnvelope"]["properties"]) == set(ErrorEnvelope.model_fields)
    assert "ErrorBody" in schemas
    assert "HTTPValidationError" not in json.dumps(openapi["paths"]), (
        "422s are ErrorEnvelopes, not FastAPI's default"
    )


def test_openapi_names_the_protocol_version(openapi: dict[str, Any]) -> None:
    assert f"protocol version {PROTOCOL_VERSION}" in openapi["info"]["description"]


def test_the_request_bodies_are_the_wire_models(openapi: dict[str, Any]) -> None:
    def body_ref(path: str) -> str:
        content = openapi["paths"][path]["post"]["requestBody"]["content"]
        return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]

    assert body_ref("/v1/chat/completions") == "ChatCompletionRequest"
    assert body_ref("/v1/completions") == "CompletionRequest"
    assert body_ref("/v1/images/generations") == "ImageGenerationRequest"
    video = openapi["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(video)


def test_api_version(client: TestClient) -> None:
    response = client.get("/api/version")
    assert response.status_code == 200
    body = response.json()
    assert body["protocol_version"] == PROTOCOL_VERSION
    assert body["version"]


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():  # pyright: ignore[reportUnknownVariableType]
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:  # pyright: ignore[reportUnknownVariableType]
            yield from _refs(item)
