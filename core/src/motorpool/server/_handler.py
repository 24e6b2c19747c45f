"""The application handler: the one object routes talk to. It owns the host and the state."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncGenerator, Sequence
from enum import StrEnum

import structlog

from motorpool._host import Host
from motorpool._settings import Settings
from motorpool.errors import HostClosing, InvalidRequest, MotorpoolError, UnsupportedCapability
from motorpool.server import _text
from motorpool.server._bridge import ThreadedStream
from motorpool.server._errors import envelope
from motorpool.server._events import EventHub
from motorpool.server._media import BlobStore
from motorpool.server._observability import Metrics
from motorpool.server._security import check_client_source
from motorpool.server._sse import DONE, sse
from motorpool.server._videos import VideoJobs
from motorpool.server.wire import native
from motorpool.server.wire import openai as oa
from motorpool.types import (
    ErrorEvent,
    ImageRequest,
    ImageResult,
    ModelInfo,
    ModelSpec,
    ResultEvent,
    StreamEvent,
    TextResult,
    TokenEvent,
)

log = structlog.get_logger(__name__)


class Phase(StrEnum):
    """Where the server is in its life."""

    STARTING = "starting"
    SERVING = "ready"
    CLOSING = "closing"


class AppHandler:
    """Parses nothing and renders nothing: it turns typed requests into host calls.

    Blocking methods run on worker threads (the routes see to it); async ones stream.
    """

    def __init__(self, settings: Settings, *, host: Host, blobs: BlobStore) -> None:
        self.settings = settings
        self.host = host
        self.blobs = blobs
        self.events = EventHub()
        self.metrics = Metrics(host.models)
        self.videos = VideoJobs(host, blobs)
        self.biome_client = threading.Lock()
        """Held while a Biome client is connected to ``/ws``: Biome's protocol has one."""
        self._lock = threading.Lock()
        self._phase = Phase.STARTING
        self._unsubscribe = host.subscribe(self.events.on_host_event)

    # -- life ------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """Starting (preloading), serving, or closing."""
        return self._phase

    @property
    def closing(self) -> bool:
        """True once the server has begun shutting down."""
        return self._phase is Phase.CLOSING

    def start(self, preload: Sequence[str]) -> None:
        """Load the preload models on a thread; the server is ready when they are."""
        names = [*preload, *(n for n, spec in self.host.aliases.items() if spec.preload)]
        if not names:
            self._set_phase(Phase.SERVING)
            return
        threading.Thread(
            target=self._preload, args=(names,), name="motorpool-preload", daemon=True
        ).start()

    def _preload(self, names: list[str]) -> None:
        for name in dict.fromkeys(names):
            try:
                self.host.load(name)
            except MotorpoolError as exc:
                log.error(  # noqa: TRY400 - the host logged the traceback of a load failure
                    "preload failed", model=name, code=exc.code, error=exc.message
                )
        self._set_phase(Phase.SERVING)

    def _set_phase(self, phase: Phase) -> None:
        with self._lock:
            if self._phase is not Phase.CLOSING:
                self._phase = phase

    def begin_shutdown(self) -> None:
        """Refuse new work and cancel what runs (streams end with a ``cancelled`` error)."""
        with self._lock:
            self._phase = Phase.CLOSING
        cancelled = self.host.cancel_all()
        self.videos.cancel_all()
        log.info("shutting down", cancelled=cancelled)
        self.events.close()  # event streams end, so the server need not wait for them

    def close(self) -> None:
        """Unload every model."""
        self.begin_shutdown()
        self._unsubscribe()
        self.host.close()

    def health(self) -> native.Health:
        """``ready`` once preloading is done; ``closing`` while shutting down."""
        return native.Health(status=self._phase.value)

    def accepting(self) -> None:
        """Raise ``HostClosing`` once shutdown has begun."""
        if self._phase is Phase.CLOSING:
            raise HostClosing("the server is shutting down", hint="retry on another instance")

    # -- models ----------------------------------------------------------------------------

    def client_spec(self, name: str) -> ModelSpec:
        """The spec a client's model name stands for; raw paths only inside model dirs."""
        self.accepting()
        spec = self.host.spec(name)
        if name not in self.host.aliases and not any(m.id == name for m in self.host.models()):
            check_client_source(self.settings, spec.source)
        return spec

    def model_cards(self) -> oa.ModelList:
        """Aliases and loaded models, as ``GET /v1/models`` lists them."""
        cards = {
            name: oa.ModelCard(id=name, owned_by=spec.plugin or "auto", status="available")
            for name, spec in self.host.aliases.items()
        }
        for info in self.host.models():
            cards[info.id] = oa.ModelCard(id=info.id, owned_by=info.plugin, status=info.status)
        return oa.ModelList(data=tuple(cards.values()))

    def load(self, body: native.LoadRequest) -> ModelInfo:
        """Load (blocking) and return the model's snapshot."""
        try:
            target = body.target()
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        if isinstance(target, str):
            target = self.client_spec(target)
        else:
            self.accepting()
            check_client_source(self.settings, target.source)
        return self.host.load(target)

    def unload(self, body: native.ModelRef) -> native.Unloaded:
        """Unload after running requests end."""
        self.host.model(body.model)  # UnknownModel when there is no such model
        self.host.unload(body.model)
        return native.Unloaded(model=body.model, unloaded=True)

    # -- text ------------------------------------------------------------------------------

    def complete(
        self, body: oa.ChatCompletionRequest | oa.CompletionRequest, request_id: str
    ) -> oa.ChatCompletion | oa.Completion:
        """A whole completion (blocking)."""
        spec = self.client_spec(body.model)
        result = self.host.generate(spec, _text.to_request(body), request_id=request_id)
        if not isinstance(result, TextResult):
            raise UnsupportedCapability(f"{body.model} did not return text")
        self._count(body.model, result)
        build = (
            _text.chat_completion
            if isinstance(body, oa.ChatCompletionRequest)
            else _text.completion
        )
        return build(_completion_id(body, request_id), body.model, result)

    def start_stream(
        self, body: oa.ChatCompletionRequest | oa.CompletionRequest, request_id: str
    ) -> AsyncGenerator[bytes]:
        """Admit a streamed completion, start it, and return its SSE frames.

        Blocking (it may load the model); typed errors raise here, before any byte is sent.
        Generation starts at once, on a thread of its own, so the first token is on its way
        while the response is set up.
        """
        spec = self.client_spec(body.model)
        generation = self.host.stream(spec, _text.to_request(body), request_id=request_id)
        writer = _text.ChunkWriter(
            chat=isinstance(body, oa.ChatCompletionRequest),
            completion_id=_completion_id(body, request_id),
            model=body.model,
        )

        # The engine starts now, while the loop sets up the response: the first token is on
        # its way sooner. ``frames`` stops it; dropped unread, it stops itself.
        events = ThreadedStream(
            generation,
            on_stop=generation.cancel,
            finish=generation.close,
            name=f"motorpool-sse-{request_id}",
        )

        def render(event: StreamEvent) -> bytes:
            if isinstance(event, TokenEvent):
                return sse(writer.token(event.text))
            if isinstance(event, ResultEvent) and isinstance(event.result, TextResult):
                self._count(body.model, event.result)
                last = sse(writer.finish(event.result.finish_reason.value))
                if body.include_usage:
                    last += sse(writer.usage(_text.usage_of(event.result)))
                return last
            if isinstance(event, ErrorEvent):
                return sse(envelope(MotorpoolError.from_info(event.error)))
            return b""

        async def frames() -> AsyncGenerator[bytes]:
            try:
                if (first := writer.start()) is not None:
                    yield sse(first)
                async for burst in events.bursts():  # one write per burst: fast tokens share it
                    if data := b"".join(render(event) for event in burst):
                        yield data
                yield DONE
            finally:
                events.stop()  # at the end, or at once when the client has gone

        return frames()

    def _count(self, model: str, result: TextResult) -> None:
        self.metrics.record_text(
            model, result.usage.completion_tokens, result.timings.output_tokens_per_s
        )

    # -- images ----------------------------------------------------------------------------

    def images(
        self, body: oa.ImageGenerationRequest, request_id: str, base_url: str
    ) -> oa.ImagesResponse:
        """Generate images (blocking); inline base64 or URLs served by this host."""
        spec = self.client_spec(body.model)
        size = body.dimensions
        request = ImageRequest(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            width=size[0] if size else None,
            height=size[1] if size else None,
            steps=body.steps,
            guidance=body.guidance,
            seed=body.seed,
            count=body.n,
        )
        result = self.host.generate(spec, request, request_id=request_id)
        if not isinstance(result, ImageResult):
            raise UnsupportedCapability(f"{body.model} did not return images")
        data: list[oa.ImageData] = []
        for image in result.images:
            if body.response_format == "url":
                blob = self.blobs.put(image.png, "image/png")
                data.append(oa.ImageData(url=f"{base_url.rstrip('/')}/v1/files/{blob.id}"))
            else:
                data.append(oa.ImageData(b64_json=_b64(image.png)))
        return oa.ImagesResponse(created=_text.now(), data=tuple(data))


def _completion_id(body: oa.ChatCompletionRequest | oa.CompletionRequest, request_id: str) -> str:
    prefix = "chatcmpl" if isinstance(body, oa.ChatCompletionRequest) else "cmpl"
    return f"{prefix}-{request_id}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
