"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Whatever a client sends, valid or not, the server answers below 500, and every 4xx is an
``ErrorEnvelope``. One run takes the names schemathesis makes up (mostly unknown models);
another aims text requests at a real model, so generation paths are fuzzed too.

schemathesis parametrizes at collection, so the schema comes from an app built at import;
each test calls a fresh app of its own (schemathesis runs its lifespan, once, per test).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import huggingface_hub
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from motorpool.server import create_app
from motorpool.server.wire.errors import ErrorEnvelope
from schemathesis import Case, checks

from tests.server.live import AppFactory, settings_for

MAX_TOKENS = 32
FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

_SCHEMA_HOME = tempfile.TemporaryDirectory(prefix="motorpool-fuzz-", ignore_cleanup_errors=True)
schema = (
    schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(settings_for(Path(_SCHEMA_HOME.name)), configure_logs=False)
    )
    .exclude(path="/api/events")  # an endless event stream
    .exclude(path="/api/probe")  # a slow hardware probe, with no input worth fuzzing
)


def _offline(*_args: object, **_kwargs: object) -> str:
    """Stands in for ``snapshot_download``: a fuzzed ``owner/name`` must not reach the hub."""
    raise huggingface_hub.errors.LocalEntryNotFoundError("offline (test)")


@pytest.fixture
def app(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The app each test calls (over the test home, with the hub out of reach)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _offline)
    return make_app(max_body_bytes=64 * 1024 * 1024)


def check(case: Case, app: FastAPI, *, excluded: tuple[str, ...] = ()) -> None:
    """schemathesis's checks, then: below 500, no traceback, and every error an envelope.

    ``positive_data_acceptance`` is left out: some rules are not JSON Schema (exactly one
    of ``model`` and ``spec``, ``stream_options`` only with ``stream``, integer keys of
    ``logit_bias``, a bound of 2**63 that JSON numbers round), so schema-valid data may
    rightly get a 422.
    """
    skipped = [getattr(checks, name) for name in ("positive_data_acceptance", *excluded)]
    response = case.call_and_validate(app=app, excluded_checks=skipped)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        envelope = ErrorEnvelope.model_validate_json(response.content)
        assert envelope.error.type == "invalid_request_error"


@schema.parametrize()
@FUZZ
def test_no_input_makes_a_server_error(case: Case, app: FastAPI) -> None:
    check(case, app)


@schema.include(path_regex=r"^/v1/(chat/)?completions$").parametrize()
@FUZZ
def test_fuzzed_text_requests_to_a_real_model(case: Case, app: FastAPI) -> None:
    body = case.body
    if isinstance(body, dict):
        body["model"] = "tiny"
        for field in ("max_tokens", "max_completion_tokens"):
            value = body.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TOKENS:
                body[field] = MAX_TOKENS
    # the edits above may make a schema-violating case valid, so it may rightly be accepted
    check(case, app, excluded=("negative_data_rejection",))
