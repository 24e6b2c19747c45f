"""The app factory: middleware, error handlers and routes around one application handler."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio.to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from motorpool._host import Host
from motorpool._logging import configure_logging
from motorpool._settings import Settings
from motorpool.errors import MotorpoolError
from motorpool.server._errors import (
    on_http_error,
    on_motorpool_error,
    on_unexpected,
    on_validation_error,
)
from motorpool.server._handler import AppHandler
from motorpool.server._media import BlobStore, DirectoryBlobStore
from motorpool.server._observability import REQUEST_ID_HEADER, RequestLog
from motorpool.server._security import BodyLimit
from motorpool.server.routes import biome, native, openai, sessions
from motorpool.server.wire import PROTOCOL_VERSION

DESCRIPTION = f"""motorpool's HTTP and WebSocket API (protocol version {PROTOCOL_VERSION}).

OpenAI-compatible routes live under `/v1`, the native API under `/api`. Every error
is an `ErrorEnvelope` with a stable `code`. See docs/server.md.
"""


def create_app(
    settings: Settings | None = None,
    *,
    blobs: BlobStore | None = None,
    preload: Sequence[str] = (),
    configure_logs: bool = True,
) -> FastAPI:
    """Build the server: discovers plugins now; loads ``preload`` models once started.

    :param blobs: where generated files go (default: ``<home>/files``).
    :param configure_logs: set up structlog (with log lines streamed to ``/api/events``).
    """
    settings = settings or Settings()
    host = Host(settings)
    handler = AppHandler(
        settings, host=host, blobs=blobs or DirectoryBlobStore(settings.home / "files")
    )
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format, tap=handler.events.log_processor)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncGenerator[None]:
        handler.start(preload)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(handler.close)

    app = FastAPI(
        title="motorpool",
        version=version("motorpool"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.handler = handler
    app.exception_handler(MotorpoolError)(on_motorpool_error)
    app.exception_handler(RequestValidationError)(on_validation_error)
    app.exception_handler(ValidationError)(on_validation_error)
    app.exception_handler(HTTPException)(on_http_error)
    app.exception_handler(Exception)(on_unexpected)
    for router in (native.probes, native.metrics, native.router, openai.router, openai.files):
        app.include_router(router)
    app.include_router(sessions.router)
    app.include_router(biome.router)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_bytes))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestLog, metrics=handler.metrics)
    return app


def handler_of(app: FastAPI) -> AppHandler:
    """The application handler behind an app made by :func:`create_app`."""
    handler = app.state.handler
    assert isinstance(handler, AppHandler)
    return handler
