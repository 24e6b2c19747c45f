"""Request ids, request logging and Prometheus metrics."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from motorpool.types import ModelInfo, ModelStatus

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def new_request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, otherwise a fresh one."""
    if given is not None and _VALID_ID.match(given):
        return given
    return f"req-{uuid.uuid4().hex[:16]}"


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (no process globals)."""

    def __init__(self, models: Callable[[], list[ModelInfo]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "motorpool_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "motorpool_http_request_duration_seconds",
            "Time to the end of the response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "motorpool_generated_tokens",
            "Completion tokens generated, by model.",
            ["model"],
            registry=self.registry,
        )
        self.tokens_per_second = Histogram(
            "motorpool_tokens_per_second",
            "Output tokens per second of each text generation, by model.",
            ["model"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=self.registry,
        )
        self.registry.register(_ModelCollector(models))

    def record_text(self, model: str, tokens: int, tokens_per_s: float | None) -> None:
        """Count one text generation."""
        self.tokens.labels(model).inc(tokens)
        if tokens_per_s is not None:
            self.tokens_per_second.labels(model).observe(tokens_per_s)


class _ModelCollector(Collector):
    """Gauges read from the host at scrape time: loaded models, memory, queue depth."""

    def __init__(self, models: Callable[[], list[ModelInfo]]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        infos = self._models()
        loaded = GaugeMetricFamily("motorpool_loaded_models", "Models ready to serve.")
        loaded.add_metric([], sum(1 for m in infos if m.status is ModelStatus.READY))
        memory = GaugeMetricFamily(
            "motorpool_model_memory_bytes", "Memory held by each model.", labels=["model"]
        )
        active = GaugeMetricFamily(
            "motorpool_active_requests", "Requests running, by model.", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "motorpool_queue_depth", "Requests waiting for a slot, by model.", labels=["model"]
        )
        for info in infos:
            memory.add_metric([info.id], info.memory_bytes)
            active.add_metric([info.id], info.active_requests)
            queued.add_metric([info.id], info.queued_requests)
        yield from (loaded, memory, active, queued)


class RequestLog:
    """ASGI middleware: a request id bound to every log line, echoed in ``X-Request-ID``.

    Logs one line per request with status and duration, and feeds the metrics.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Bind the id, time the request, log and count it."""
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(REQUEST_ID_HEADER.encode())
        request_id = new_request_id(given.decode("latin-1") if given is not None else None)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = str(getattr(route, "path", "unmatched"))  # a Starlette route, when matched
        method = str(scope.get("method", "WS"))
        if scope["type"] == "http":
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(template).observe(seconds)
        log.info(
            "request",
            method=method,
            path=scope["path"],
            status=status or None,
            duration_ms=round(seconds * 1000, 2),
        )
