"""Safe defaults: bind refusal, API keys, CORS, body limits, confined paths, bad input."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from motorpool.server.wire.errors import ErrorEnvelope
from motorpool_testengine.plugin import write_model

from tests.server.live import AppFactory, LiveServer
from tests.support import MOTORPOOL

KEY = "s3cret-key"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_envelope(response: httpx.Response, status: int, code: str) -> ErrorEnvelope:
    """The response is an ``ErrorEnvelope`` with this status and code, and no traceback."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = ErrorEnvelope.model_validate_json(response.content)
    assert error.error.code == code, response.text
    assert error.error.message
    assert error.error.type == ("invalid_request_error" if status < 500 else "server_error")
    return error


def chat(model: str) -> dict[str, Any]:
    return {**CHAT, "model": model}


# -- binding -------------------------------------------------------------------------------


def test_serve_refuses_a_public_bind_without_a_key(home: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MOTORPOOL_")}
    environment["MOTORPOOL_HOME"] = str(home)
    result = subprocess.run(
        [str(MOTORPOOL), "serve", "--bind", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=home,
        timeout=30,  # it must refuse at once, not start serving
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "MOTORPOOL_API_KEY" in result.stderr
    assert "0.0.0.0" in result.stderr
    assert "Traceback" not in result.stderr


# -- API key -------------------------------------------------------------------------------


@pytest.fixture
def keyed(make_app: AppFactory) -> Iterator[TestClient]:
    with TestClient(make_app(api_key=KEY)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
    ],
    ids=["none", "wrong", "longer", "basic-scheme", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/v1/models", "/api/version", "/api/models", "/metrics"])
def test_a_missing_or_wrong_key_is_401(
    keyed: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = keyed.get(path, headers=headers)
    error = assert_envelope(response, 401, "unauthorized")
    assert error.error.hint is not None
    assert KEY not in response.text


def test_a_missing_key_is_401_on_posts_too(keyed: TestClient) -> None:
    assert_envelope(keyed.post("/v1/chat/completions", json=CHAT), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/v1/models", "/api/version", "/metrics"])
def test_the_right_key_is_200(keyed: TestClient, path: str) -> None:
    response = keyed.get(path, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200, response.text


def test_the_right_key_generates(keyed: TestClient) -> None:
    response = keyed.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_health_needs_no_key(keyed: TestClient) -> None:
    response = keyed.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_openai_sdk_with_the_key(live_factory: Any) -> None:
    live: LiveServer = live_factory(api_key=KEY)
    reply = live.openai(KEY).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content
    assert {m.id for m in live.openai(KEY).models.list()} >= {"tiny", "slow"}
    with pytest.raises(openai.AuthenticationError) as raised:
        live.openai("wrong").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert raised.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        live.openai("wrong").models.list()


# -- CORS ----------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_no_cors_by_default(client: TestClient) -> None:
    response = preflight(client, "http://evil.example")
    assert "access-control-allow-origin" not in response.headers
    simple = client.get("/v1/models", headers={"Origin": "http://evil.example"})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_only_the_configured_origins(make_app: AppFactory) -> None:
    with TestClient(make_app(cors_origins=("http://ok.example",))) as client:
        allowed = preflight(client, "http://ok.example")
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "http://ok.example"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

        refused = preflight(client, "http://evil.example")
        assert refused.status_code >= 400
        assert refused.headers.get("access-control-allow-origin") != "http://evil.example"

        simple = client.get("/v1/models", headers={"Origin": "http://ok.example"})
        assert simple.headers["access-control-allow-origin"] == "http://ok.example"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        other = client.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# -- body limit ----------------------------------------------------------------------------

LIMIT = 1024
BIG = chat("tiny") | {"messages": [{"role": "user", "content": "x" * 4 * LIMIT}]}


def test_a_declared_body_over_the_limit_is_413(make_app: AppFactory) -> None:
    with TestClient(make_app(max_body_bytes=LIMIT)) as client:
        response = client.post("/v1/chat/completions", json=BIG)
        error = assert_envelope(response, 413, "body_too_large")
        assert "x-request-id" in response.headers
        assert error.error.hint is not None
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_a_streamed_body_over_the_limit_is_413(live_factory: Any) -> None:
    live: LiveServer = live_factory(max_body_bytes=LIMIT)
    body = httpx.Request("POST", "/", json=BIG).content

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    with httpx.Client(base_url=live.url, timeout=10) as http:
        response = http.post(
            "/v1/chat/completions",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_envelope(response, 413, "body_too_large")

        small = httpx.Request("POST", "/", json=CHAT).content
        ok = http.post(
            "/v1/chat/completions",
            content=iter([small[:10], small[10:]]),
            headers={"Content-Type": "application/json"},
        )
        assert ok.status_code == 200, ok.text


def test_a_multipart_video_body_over_the_limit_is_413(make_app: AppFactory) -> None:
    with TestClient(make_app(max_body_bytes=LIMIT)) as client:
        response = client.post(
            "/v1/videos",
            data={"model": "tiny", "prompt": "a cat"},
            files={"input_reference": ("seed.png", b"\x89PNG" + b"\0" * 4 * LIMIT, "image/png")},
        )
        assert_envelope(response, 413, "body_too_large")


# -- local paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["testengine:", ""], ids=["plugin-prefix", "plain"])
def test_a_raw_path_is_refused_without_model_dirs(
    client: TestClient, home: Path, prefix: str
) -> None:
    model = f"{prefix}{home / 'tiny.mptest.json'}"
    error = assert_envelope(
        client.post("/v1/chat/completions", json=chat(model)), 403, "source_not_allowed"
    )
    assert error.error.hint is not None
    assert_envelope(
        client.post("/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 2}),
        403,
        "source_not_allowed",
    )
    assert_envelope(
        client.post("/api/models/load", json={"model": model}), 403, "source_not_allowed"
    )
    spec = {"spec": {"plugin": "testengine", "source": str(home / "tiny.mptest.json")}}
    assert_envelope(client.post("/api/models/load", json=spec), 403, "source_not_allowed")
    assert client.get("/api/models").json()["models"] == []


@pytest.fixture
def confined(make_app: AppFactory, home: Path) -> Iterator[TestClient]:
    models = home / "models"
    models.mkdir()
    write_model(models / "inside.mptest.json")
    (models / "link.mptest.json").symlink_to(home / "tiny.mptest.json")
    with TestClient(make_app(model_dirs=(models,))) as test_client:
        yield test_client


def test_a_path_inside_model_dirs_is_served(confined: TestClient, home: Path) -> None:
    for model in (
        f"testengine:{home / 'models' / 'inside.mptest.json'}",
        str(home / "models" / "inside.mptest.json"),
    ):
        response = confined.post("/v1/chat/completions", json=chat(model))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "relative",
    ["models/../tiny.mptest.json", "models/link.mptest.json", "tiny.mptest.json"],
    ids=["dot-dot", "symlink-out", "outside"],
)
@pytest.mark.parametrize("prefix", ["testengine:", ""], ids=["plugin-prefix", "plain"])
def test_escapes_from_model_dirs_are_refused(
    confined: TestClient, home: Path, relative: str, prefix: str
) -> None:
    model = f"{prefix}{home}/{relative}"
    assert_envelope(
        confined.post("/v1/chat/completions", json=chat(model)), 403, "source_not_allowed"
    )
    assert_envelope(
        confined.post("/api/models/load", json={"model": model}), 403, "source_not_allowed"
    )
    assert all(m["status"] != "ready" for m in confined.get("/api/models").json()["models"])


# -- bad input -----------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]
IMAGE = {"model": "tiny", "prompt": "a cat"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", {"model": 123, "messages": MESSAGES}, "model"),
        ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}, "messages"),
        ("/v1/chat/completions", CHAT | {"max_tokens": "many"}, "max_tokens"),
        ("/v1/chat/completions", CHAT | {"temperature": [1]}, "temperature"),
        ("/v1/chat/completions", CHAT | {"stream": "maybe"}, "stream"),
        ("/v1/chat/completions", CHAT | {"frobnicate": True}, "frobnicate"),
        ("/v1/chat/completions", CHAT | {"max_tokens": -1}, "max_tokens"),
        ("/v1/chat/completions", CHAT | {"max_tokens": 0}, "max_tokens"),
        ("/v1/chat/completions", CHAT | {"n": 2}, "n"),
        ("/v1/chat/completions", CHAT | {"temperature": -1}, "temperature"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": MESSAGES}, "model"),
        ("/v1/chat/completions", {"model": "", "messages": MESSAGES}, "model"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]},
            "role",
        ),
        ("/v1/completions", {"model": "tiny", "prompt": "hi", "echo": True}, "echo"),
        ("/v1/completions", {"model": "tiny", "prompt": ""}, "prompt"),
        ("/v1/images/generations", IMAGE | {"size": "abc"}, "size"),
        ("/v1/images/generations", IMAGE | {"size": "-5x10"}, "size"),
        ("/v1/images/generations", IMAGE | {"size": "99999x99999"}, "size"),
        ("/v1/images/generations", IMAGE | {"size": "4x4"}, "size"),
        ("/v1/images/generations", IMAGE | {"n": 0}, "n"),
        ("/v1/images/generations", IMAGE | {"n": 1000}, "n"),
        ("/v1/images/generations", IMAGE | {"response_format": "gif"}, "response_format"),
        ("/v1/videos", IMAGE | {"size": "99999x99999"}, "size"),
        ("/v1/videos", IMAGE | {"seconds": -1}, "seconds"),
        ("/v1/videos", IMAGE | {"extra": 1}, "extra"),
        ("/api/models/load", {"model": ""}, "model"),
        ("/api/models/load", {"model": "tiny", "junk": 1}, "junk"),
        ("/api/models/pin", {"model": "tiny", "pinned": "sort of"}, "pinned"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path, json=body)
    error = assert_envelope(response, 422, "invalid_request")
    assert field in error.error.message, error.error.message


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/completions", "/v1/images/generations", "/api/models/load"],
)
@pytest.mark.parametrize(
    "content", [b"{not json", b"", b'{"model": "tiny",', b"\xff\xfe"], ids=repr
)
def test_malformed_json_is_400(client: TestClient, path: str, content: bytes) -> None:
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code in {400, 422}, response.text
    if content != b"":  # an empty body is a missing body (422), not malformed JSON
        assert_envelope(response, 400, "invalid_json")
    else:
        assert_envelope(response, 422, "invalid_request")


def test_malformed_json_video_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/videos", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_envelope(response, 400, "invalid_json")


def test_a_json_array_is_422(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=[CHAT])
    assert_envelope(response, 422, "invalid_request")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/v1/nope"), ("GET", "/api/models/nope/x"), ("GET", "/v2/models")],
)
def test_an_unknown_route_is_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    error = assert_envelope(response, 404, "not_found")
    assert path in error.error.message


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("DELETE", "/v1/models"),
        ("PUT", "/api/models/load"),
        ("POST", "/health"),
    ],
)
def test_a_wrong_method_is_405(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    error = assert_envelope(response, 405, "method_not_allowed")
    assert method in error.error.message
    assert response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/videos", "GET, POST"),
        ("/v1/videos/abc", "GET, DELETE"),
        ("/v1/chat/completions", "POST"),
        ("/health", "GET"),
    ],
)
def test_a_405_lists_every_allowed_method(client: TestClient, path: str, allowed: str) -> None:
    response = client.request("PATCH", path)
    assert_envelope(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert_envelope(client.get("/v1/videos/nope"), 404, "job_not_found")
    assert_envelope(client.get("/v1/files/nope"), 404, "not_found")
    response = client.post("/api/models/unload", json={"model": "nope"})
    assert response.status_code == 404, response.text
    ErrorEnvelope.model_validate_json(response.content)


def test_an_unknown_model_is_a_4xx_envelope(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=chat("no-such-model"))
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text
    ErrorEnvelope.model_validate_json(response.content)


def test_a_model_that_fails_to_load_is_an_envelope(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=chat("broken"))
    assert response.status_code >= 400, response.text
    assert "Traceback" not in response.text
    ErrorEnvelope.model_validate_json(response.content)


# -- request ids ---------------------------------------------------------------------------


def test_every_response_has_a_request_id(client: TestClient) -> None:
    ids = set()
    for response in (
        client.get("/health"),
        client.get("/v1/models"),
        client.get("/nope"),
        client.post("/v1/chat/completions", json=CHAT | {"n": 2}),
    ):
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 4


@pytest.mark.parametrize("given", ["abc-123", "req.1:2_3", "A" * 64])
def test_a_sane_request_id_is_echoed(client: TestClient, given: str) -> None:
    response = client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": given})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == given
    assert given in response.json()["id"]


@pytest.mark.parametrize(
    "given", ["A" * 65, "has space", "semi;colon", "new\\nline", "<script>", ""]
)
def test_an_insane_request_id_is_replaced(client: TestClient, given: str) -> None:
    response = client.get("/v1/models", headers={"X-Request-ID": given})
    echoed = response.headers["x-request-id"]
    assert echoed != given
    assert echoed.startswith("req-")
    assert len(echoed) <= 64
