"""Safe defaults: loopback unless a key is set, bearer auth, body limits, confined paths."""

from __future__ import annotations

import hmac
import ipaddress

import structlog
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from motorpool._settings import Settings
from motorpool._sources import hub_repo_id
from motorpool.errors import InvalidRequest, MotorpoolError, SourceNotAllowed
from motorpool.server._errors import error_response

log = structlog.get_logger(__name__)


class Unauthorized(MotorpoolError):
    """The request has no valid API key."""

    code = "unauthorized"
    status = 401


class BodyTooLarge(MotorpoolError):
    """The request body is larger than ``max_body_bytes``."""

    code = "body_too_large"
    status = 413


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IPv4/IPv6 addresses."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond this machine without an API key."""
    if not is_loopback(settings.bind) and settings.api_key is None:
        raise InvalidRequest(
            f"refusing to listen on {settings.bind} without an API key",
            hint="set MOTORPOOL_API_KEY (or --api-key), or bind 127.0.0.1",
        )


def check_key(settings: Settings, presented: str | None) -> None:
    """Raise :class:`Unauthorized` unless ``presented`` is the key (constant-time compare)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if presented is None or not hmac.compare_digest(presented.encode(), expected):
        raise Unauthorized(
            "missing or wrong API key", hint="send the header 'Authorization: Bearer <key>'"
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def socket_key(connection: HTTPConnection) -> str | None:
    """The key a WebSocket client presents: a bearer header, or ``?api_key=`` (browsers)."""
    return bearer_token(connection.headers.get("authorization")) or connection.query_params.get(
        "api_key"
    )


def check_client_source(settings: Settings, source: str) -> None:
    """A client may name local paths only inside the configured model directories.

    Aliases come from the operator and are trusted; a raw path from a client is not:
    without ``model_dirs`` it is refused, with them the host confines it (``..`` and
    symlinks resolved before the check).
    """
    if hub_repo_id(source) is None and not settings.model_dirs:
        raise SourceNotAllowed(
            f"this server does not load local paths named by clients: {source!r}",
            hint="name an alias from the models file, or start the server with --model-dir",
        )


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, declared or streamed.

    It reads the body before the app runs (every route reads all of it anyway) and answers
    the 413 itself: an error raised from ``receive`` inside a route would not reach the
    error handlers as itself.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count what arrives; replay it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was whole: nobody to answer
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(
            f"request body larger than {self.max_bytes} bytes",
            hint="send a smaller body, or raise MOTORPOOL_MAX_BODY_BYTES",
        )
        log.info("request rejected", path=scope["path"], code=error.code, status=error.status)
        await error_response(error)(scope, receive, send)
