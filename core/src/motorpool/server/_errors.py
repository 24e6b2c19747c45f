"""One error envelope for every failure, and the boundary's logging policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import structlog
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match

from motorpool.errors import EngineFailed, InvalidRequest, MotorpoolError
from motorpool.server.wire.errors import ErrorBody, ErrorEnvelope

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 1
_SHOWN_ERRORS = 5
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class NotFound(MotorpoolError):
    """No route, job or file with that name."""

    code = "not_found"
    status = 404


class MalformedBody(InvalidRequest):
    """The body is not JSON (or not the form) the route takes."""

    code = "invalid_json"
    status = 400


class MethodNotAllowed(MotorpoolError):
    """The route exists but not for this method."""

    code = "method_not_allowed"
    status = 405


def envelope(error: MotorpoolError, *, param: str | None = None) -> ErrorEnvelope:
    """The wire form of a typed error."""
    return ErrorEnvelope(
        error=ErrorBody(
            code=error.code,
            message=error.message,
            type="invalid_request_error" if error.is_client_error else "server_error",
            hint=error.hint,
            param=param,
        )
    )


def error_response(error: MotorpoolError, *, param: str | None = None) -> Response:
    """A JSON error response; 503s say when to retry."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if error.status == 503 else None  # noqa: PLR2004
    return JSONResponse(
        envelope(error, param=param).model_dump(mode="json"),
        status_code=error.status,
        headers=headers,
    )


def validation_error(errors: Sequence[ErrorDetails]) -> tuple[InvalidRequest, str | None]:
    """One readable message from pydantic's error list, and the first field at fault."""
    malformed = [e for e in errors if e["type"] == "json_invalid"]
    if malformed:
        reason = str(malformed[0].get("ctx", {}).get("error", "")).strip()
        return MalformedBody(f"the body is not valid JSON: {reason}".rstrip(": ")), None
    parts: list[str] = []
    param: str | None = None
    for detail in errors[:_SHOWN_ERRORS]:
        location = [str(p) for p in detail["loc"] if p != "body"]
        where = ".".join(location) or "body"
        param = param or (where if location else None)
        if detail["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field (this server does not accept it)")
        else:
            parts.append(f"{where}: {detail['msg']}")
    more = len(errors) - _SHOWN_ERRORS
    message = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return InvalidRequest(message or "invalid request"), param


async def on_motorpool_error(request: Request, exc: Exception) -> Response:
    """Typed errors: 4xx logged without a traceback, 5xx with it."""
    assert isinstance(exc, MotorpoolError)
    _log(request, exc)
    return error_response(exc)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """Bad JSON, wrong types, unknown fields: 422 naming the fields."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    error, param = validation_error(cast("Sequence[ErrorDetails]", exc.errors()))
    _log(request, error)
    return error_response(error, param=param)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in the same envelope."""
    assert isinstance(exc, HTTPException)
    error: MotorpoolError
    if exc.status_code == 404:  # noqa: PLR2004
        error = NotFound(f"no such route: {request.method} {request.url.path}")
    elif exc.status_code == 405:  # noqa: PLR2004
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = InvalidRequest(f"{exc.status_code}: {exc.detail}")
    _log(request, error)
    response = error_response(error)
    response.headers.update(exc.headers or {})
    if isinstance(error, MethodNotAllowed) and (allowed := _allowed_methods(request)):
        response.headers["Allow"] = ", ".join(allowed)  # Starlette names one route's methods
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on this request's path."""
    routes: list[BaseRoute] = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """Anything else is a bug: logged with its traceback, a typed 500 to the client."""
    log.error("unhandled error", path=request.url.path, exc_info=exc)
    return error_response(EngineFailed("internal error; the server log has the details"))


def _log(request: Request, error: MotorpoolError) -> None:
    fields = {"path": request.url.path, "code": error.code, "status": error.status}
    if error.is_client_error:
        log.info("request rejected", error=error.message, **fields)
    else:
        log.error("request failed", exc_info=error, **fields)
