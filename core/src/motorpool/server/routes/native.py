"""The native API (``/api``), health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from importlib.metadata import version

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from motorpool.server._bridge import call_until_disconnect
from motorpool.server._deps import Handler, require_key
from motorpool.server._sse import EventStreamResponse, sse
from motorpool.server.routes.openai import ERRORS
from motorpool.server.wire import PROTOCOL_VERSION, native
from motorpool.types import ModelInfo

router = APIRouter(prefix="/api", dependencies=[Depends(require_key)], responses=ERRORS)
probes = APIRouter()
metrics = APIRouter(dependencies=[Depends(require_key)], responses=ERRORS)


@probes.get("/health")
async def health() -> native.Health:
    """Liveness: the process answers."""
    return native.Health(status="ok")


@probes.get("/ready", responses={503: {"model": native.Health}})
async def ready(handler: Handler) -> Response:
    """Readiness: 200 once preloaded models are loaded, 503 while starting or closing."""
    state = handler.health()
    return JSONResponse(
        state.model_dump(mode="json"), status_code=200 if state.status == "ready" else 503
    )


@metrics.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus(handler: Handler) -> Response:
    """Prometheus metrics: requests, latency, tokens/s, queue depth, models, memory."""
    body = await anyio.to_thread.run_sync(generate_latest, handler.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/version")
async def get_version() -> native.VersionInfo:
    """The server's version and wire protocol version."""
    return native.VersionInfo(version=version("motorpool"), protocol_version=PROTOCOL_VERSION)


@router.get("/plugins")
async def list_plugins(handler: Handler) -> native.PluginList:
    """Every plugin entry point: loaded, disabled or failed, with reason and fix."""
    return native.PluginList(plugins=tuple(handler.host.plugins))


@router.get("/probe")
async def probe(handler: Handler, deep: bool = False) -> native.ProbeResponse:  # noqa: FBT002 - a query flag
    """This machine's hardware and what each plugin can do on it."""

    def run() -> native.ProbeResponse:
        return native.ProbeResponse(
            hardware=handler.host.hardware(), plugins=tuple(handler.host.probe(deep=deep))
        )

    return await anyio.to_thread.run_sync(run)


@router.get("/models")
async def list_loaded(handler: Handler) -> native.ModelListResponse:
    """Models loading, ready, failed or unloading, with memory and idle time."""
    return native.ModelListResponse(models=tuple(handler.host.models()))


@router.get("/aliases")
async def list_aliases(handler: Handler) -> native.AliasListResponse:
    """The models file's aliases."""
    return native.AliasListResponse(aliases=dict(handler.host.aliases))


@router.post("/models/load")
async def load(body: native.LoadRequest, request: Request, handler: Handler) -> ModelInfo:
    """Load a model and wait until it is ready (or failed)."""
    return await call_until_disconnect(lambda: handler.load(body), request.receive, lambda: None)


@router.post("/models/unload")
async def unload(body: native.ModelRef, handler: Handler) -> native.Unloaded:
    """Unload a model once its running requests end (cancels a load in progress)."""
    return await anyio.to_thread.run_sync(handler.unload, body)


@router.post("/models/pin")
async def pin(body: native.PinRequest, handler: Handler) -> ModelInfo:
    """Pin a model (never evicted, never unloaded when idle) or unpin it."""
    return handler.host.pin(body.model, pinned=body.pinned)


@router.post("/requests/{request_id}/cancel")
async def cancel(request_id: str, handler: Handler) -> native.CancelResponse:
    """Cancel a request by its ``X-Request-ID`` (running, queued or waiting for its model)."""
    return native.CancelResponse(request_id=request_id, cancelled=handler.host.cancel(request_id))


@router.get(
    "/events",
    response_class=EventStreamResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "ServerEvent per frame"}},
)
async def events(handler: Handler) -> EventStreamResponse:
    """Server-sent events: model state changes, progress of loads and requests, log lines."""

    async def frames() -> AsyncGenerator[bytes]:
        with handler.events.subscribe() as events:  # before ': connected': nothing is missed
            yield b": connected\n\n"
            async for event in events:
                yield sse(event)

    return EventStreamResponse(frames(), on_disconnect=lambda: None)
