"""Biome-compatible sessions (``/ws``): Biome's desktop app drives a motorpool world model.

Matched against Overworldai/Biome v1.1.1 (commit e3bc371, GPL-3.0; facts only, no code):
its server's ``server/routes.py`` (``/ws``: version check, then the one-client gate, then
``system_info`` and ``session.waiting_for_seed``; a refusal is an ``error`` push and a
close), ``server/session/handlers.py`` and ``workers.py`` (``init`` answered after
``session.ready``; a new seed restarts from it; an ``init`` without one re-applies
settings; controls while paused are dropped; 60 s to send ``init``), and the app's
``useSessionInit.ts`` (it re-sends ``init`` whenever a live setting changes or a seed is
picked). The message types are in :mod:`motorpool.server.wire.biome`.

Where motorpool differs: the close codes are the native endpoint's (Biome closes with
1000 and its app does not read the code); messages before ``init``, a second ``init``
while one is opening, malformed or unknown messages get typed errors (Biome ignores
them); ``scene_edit``, ``generate_scene`` and ``check_seed_safety`` are answered as not
supported; frame headers carry no VRAM or GPU figures; frames go out as the engine
encoded them (JPEG for world_engine). A session runs as on the native endpoint
(:mod:`motorpool.server._sessions`): generation on a thread of its own into a one-batch
mailbox, so a slow client gets the newest batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import platform
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from motorpool._session import Session, new_session_id
from motorpool.errors import InvalidRequest, ModelBusy, MotorpoolError, UnsupportedCapability
from motorpool.server._errors import validation_error
from motorpool.server._handler import AppHandler
from motorpool.server._sessions import (
    Mailbox,
    ThreadSender,
    cancel_opening,
    close_code,
    generate_into,
    recording_path,
    start_session,
)
from motorpool.server.wire import biome as wire
from motorpool.server.wire.sessions import CloseCode
from motorpool.types import ProgressEvent, SeedFrame, SessionConfig

log = structlog.get_logger(__name__)

INIT_TIMEOUT_S = 60.0
"""How long a client may wait before its first ``init`` (Biome's own limit)."""
JPEG_QUALITY = 85
"""Biome's."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_STAGES = {
    "download": wire.Stage.LOADING_MODEL,
    "download_files": wire.Stage.LOADING_MODEL,
    "load": wire.Stage.LOADING_WEIGHTS,
    "warmup": wire.Stage.WARMUP_COMPILE,
}
"""Engine progress stages as Biome's; any other is shown as compiling."""


async def serve_biome(websocket: WebSocket, handler: AppHandler) -> None:
    """Serve one Biome client on an accepted, authorised socket until either side ends."""
    version_sent = websocket.query_params.get("protocol_version")
    if version_sent != str(wire.PROTOCOL_VERSION):
        error = InvalidRequest(
            f"Biome protocol version {version_sent!r} is not supported",
            hint=f"this server speaks version {wire.PROTOCOL_VERSION} (?protocol_version=)",
        )
        params = {"client": version_sent or "unknown", "server": str(wire.PROTOCOL_VERSION)}
        await _refuse(websocket, _error(error, wire.MessageId.PROTOCOL_VERSION_MISMATCH, params))
        return
    if not handler.biome_client.acquire(blocking=False):
        busy = ModelBusy("another Biome client is connected", hint="one at a time: retry later")
        await _refuse(websocket, _error(busy, wire.MessageId.SERVER_BUSY), CloseCode.BUSY)
        return
    try:
        await _Connection(websocket, handler).serve()
    finally:
        handler.biome_client.release()


# -- one connection ------------------------------------------------------------------------


class _Stream:
    """An open session generating into its mailbox, and the task sending its batches."""

    def __init__(self, session: Session, model: str, mailbox: Mailbox) -> None:
        self.session = session
        self.model = model
        self.mailbox = mailbox
        self.sender = anyio.CancelScope()
        self.stopping = False
        """Closed on purpose (the client left, or asked for another seed): no error."""
        self._thread: threading.Thread | None = None

    def start(self, handler: AppHandler) -> None:
        self._thread = generate_into(self.session, self.mailbox, handler)

    async def stop(self) -> None:
        """Close the session, giving the model back, and wait for its generation to end."""
        self.stopping = True
        self.sender.cancel()
        await anyio.to_thread.run_sync(self.session.close)
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """No session: waiting for ``init``."""


@dataclass(frozen=True, slots=True)
class _Opening:
    """An ``init`` is opening a session (loading, warming up)."""

    req_id: str
    session_id: str
    """Of the session being opened: cancelled if the client leaves before it is open."""


@dataclass(frozen=True, slots=True)
class _Live:
    """A session is generating."""

    stream: _Stream


@dataclass(frozen=True, slots=True)
class _Rejected:
    """A message that failed to parse, and its request id if it had one."""

    error: MotorpoolError
    req_id: str | None


class _Connection:
    """One Biome client: a receive loop, and the session its ``init`` opened."""

    def __init__(self, websocket: WebSocket, handler: AppHandler) -> None:
        self._websocket = websocket
        self._handler = handler
        self._state: _Waiting | _Opening | _Live = _Waiting()
        self._system = wire.SystemInfo(torch_version="")
        self._group: anyio.abc.TaskGroup | None = None

    async def serve(self) -> None:
        self._system = await anyio.to_thread.run_sync(_system_info, self._handler)
        await self._send(wire.SystemInfoMessage(**self._system.model_dump()))
        await self._send(wire.StatusMessage(stage=wire.Stage.WAITING_FOR_SEED))
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                with contextlib.suppress(WebSocketDisconnect):  # the client left
                    await self._receive_loop()
                if isinstance(opening := self._state, _Opening):  # nobody is left to take it
                    await cancel_opening(
                        self._handler,
                        opening.session_id,
                        still_opening=lambda: isinstance(self._state, _Opening),
                    )
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if isinstance(self._state, _Live):
                    await self._state.stream.stop()
                    log.info("biome session closed", model=self._state.stream.model)

    async def _receive_loop(self) -> None:
        while True:
            message: wire.ClientMessage | _Rejected | None = None
            waiting = isinstance(self._state, _Waiting)
            with anyio.move_on_after(INIT_TIMEOUT_S if waiting else math.inf):
                message = await self._receive()
            if message is not None:
                await self._dispatch(message)
                continue
            error = InvalidRequest(f"no 'init' within {INIT_TIMEOUT_S:.0f} s")
            await self._send(_error(error, wire.MessageId.TIMEOUT_WAITING_FOR_SEED))
            await _close(self._websocket, CloseCode.BAD_REQUEST, error.message)
            return

    async def _dispatch(self, message: wire.ClientMessage | _Rejected) -> None:
        match message:
            case _Rejected(error=error, req_id=req_id):
                if req_id is None:
                    await self._send(_error(error))
                else:  # an RPC the client waits on: answer it
                    await self._send(
                        wire.Failure(req_id=req_id, error=error.message, code=error.code)
                    )
            case wire.Init():
                await self._init(message)
            case wire.SceneEdit() | wire.GenerateScene() | wire.CheckSeedSafety():
                error = UnsupportedCapability(f"{message.type} is not supported by motorpool")
                await self._send(
                    wire.Failure(req_id=message.req_id, error=error.message, code=error.code)
                )
            case wire.Control() | wire.Pause() | wire.Resume() | wire.Reset() | wire.Prompt():
                if isinstance(self._state, _Live):
                    await self._notify(self._state.stream.session, message)
                else:
                    error = InvalidRequest(
                        f"'{message.type}' before the session is open",
                        hint="send 'init' and wait for its response",
                    )
                    await self._send(_error(error))

    async def _notify(
        self,
        session: Session,
        message: wire.Control | wire.Pause | wire.Resume | wire.Reset | wire.Prompt,
    ) -> None:
        match message:
            case wire.Control():
                if not session.paused:  # as Biome: input while paused is dropped
                    session.control(wire.control_input(message))
            case wire.Pause():
                session.pause()
                await self._log("paused")
            case wire.Resume():
                session.resume()
                await self._log("resumed")
            case wire.Reset():
                session.reset()
                await self._log("reset to the seed image")
            case wire.Prompt():
                try:
                    session.prompt(message.prompt.strip())
                except MotorpoolError as exc:  # a model without prompts: the session goes on
                    await self._send(_error(exc))
                    return
                await self._log("prompt set", prompt=message.prompt.strip())

    # -- init ------------------------------------------------------------------------------

    async def _init(self, request: wire.Init) -> None:
        match self._state:
            case _Opening():
                error = InvalidRequest("an 'init' is already opening the session")
                await self._send(_failure(request.req_id, error))
                return
            case _Live(stream=stream) if (
                request.seed_image_data is None and self._model_name(request) == stream.model
            ):
                # Biome re-sends init when a live setting changes: the session goes on.
                await self._send(wire.Success(req_id=request.req_id, data=self._data(stream)))
                await self._log("init without a new seed: the session goes on")
                return
            case _:
                pass
        try:
            seed = _seed_of(request)
        except _SeedError as exc:
            await self._send(wire.WarningMessage(message_id=exc.warning))
            await self._send(_failure(request.req_id, exc.error))
            return
        previous = self._state.stream if isinstance(self._state, _Live) else None
        opening = _Opening(request.req_id, new_session_id())
        self._state = opening
        assert self._group is not None
        self._group.start_soon(self._open, request, seed, previous, opening.session_id)

    async def _open(
        self, request: wire.Init, seed: SeedFrame, previous: _Stream | None, session_id: str
    ) -> None:
        stream: _Stream | None = None
        # Shielded: a session that opens after its client has left is still closed.
        with anyio.CancelScope(shield=True):
            stream = await self._start(request, seed, previous, session_id)
        if stream is None:
            return
        session = stream.session
        log.info("biome session opened", model=stream.model, session_id=session.id)
        await self._send(wire.StatusMessage(stage=wire.Stage.READY))
        await self._send(wire.Success(req_id=request.req_id, data=self._data(stream)))
        await self._log(
            "session opened",
            model=stream.model,
            width=session.info.width,
            height=session.info.height,
            frames_per_step=session.info.frames_per_step,
            fps=session.fps or 0.0,
        )
        stream.start(self._handler)
        assert self._group is not None
        self._group.start_soon(self._send_frames, stream)

    async def _start(
        self, request: wire.Init, seed: SeedFrame, previous: _Stream | None, session_id: str
    ) -> _Stream | None:
        """Open the session (the state is then live), or answer why not."""
        if previous is not None:  # one session at a time: a new seed replaces it
            await previous.stop()
        name = self._model_name(request)
        await self._send(wire.StatusMessage(stage=wire.Stage.LOADING_MODEL))
        progress = _Progress(self._websocket)
        try:
            spec = self._handler.client_spec(name)
            config = self._config_of(request.config)
            session = await start_session(
                self._handler, spec, seed, config, progress, session_id=session_id
            )
        except MotorpoolError as exc:
            await progress.drained()
            self._state = _Waiting()
            log.info("biome init failed", model=name, code=exc.code, error=exc.message)
            busy = isinstance(exc, ModelBusy)
            message_id = wire.MessageId.SERVER_BUSY if busy else wire.MessageId.INIT_FAILED
            await self._send(_error(exc, message_id))
            await self._send(_failure(request.req_id, exc, message_id))
            return None
        await progress.drained()  # every stage before 'ready'
        stream = _Stream(session, name, Mailbox(asyncio.get_running_loop()))
        self._state = _Live(stream)
        return stream

    def _model_name(self, request: wire.Init) -> str:
        return self._handler.settings.biome_model or request.model.strip()

    def _config_of(self, config: wire.SessionConfig) -> SessionConfig:
        record = None
        if config.video_recording:
            name = f"biome-{datetime.now(UTC):%Y%m%d-%H%M%S}.mp4"
            record = recording_path(self._handler, name)
        return SessionConfig(
            realtime=config.cap_inference_fps, jpeg_quality=JPEG_QUALITY, record_path=record
        )

    def _data(self, stream: _Stream) -> wire.InitData:
        fps = stream.session.info.fps
        return wire.InitData(
            model=stream.model,
            inference_fps=round(fps) if fps is not None else 0,
            system_info=self._system,
        )

    # -- frames ----------------------------------------------------------------------------

    async def _send_frames(self, stream: _Stream) -> None:
        frames = 0  # since the session (re)started: Biome's ids count frames, from 1
        with stream.sender:
            while (batch := await stream.mailbox.take()) is not None:
                if batch.reset is not None:
                    frames = 0
                header = wire.FrameHeader(
                    frame_id=frames + 1,
                    client_ts=batch.client_ts or 0.0,
                    gen_ms=batch.generation_ms,
                    temporal_compression=len(batch.frames),
                )
                frames += len(batch.frames)
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client left
                    await self._websocket.send_bytes(wire.encode_batch(header, batch.frames))
            if stream.stopping:
                return
            # The session ended by itself: the engine failed, it was cancelled by its id, or
            # the server is shutting down.
            ended = stream.mailbox.ended
            if isinstance(ended, MotorpoolError):
                await self._send(_error(ended))
                await _close(self._websocket, close_code(ended), ended.message)
            else:
                await _close(self._websocket, CloseCode.GOING_AWAY, "the server is shutting down")
            assert self._group is not None
            self._group.cancel_scope.cancel()

    # -- sending ---------------------------------------------------------------------------

    async def _receive(self) -> wire.ClientMessage | _Rejected:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(int(message.get("code", CloseCode.NORMAL)))
        text = message.get("text")
        if text is None:
            return _Rejected(InvalidRequest("send messages as JSON text, not binary"), None)
        try:
            return wire.CLIENT_MESSAGE.validate_json(text)
        except ValidationError as exc:
            error, _ = validation_error(exc.errors())
            try:
                req_id = wire.Envelope.model_validate_json(text).req_id
            except ValidationError:
                req_id = None
            return _Rejected(error, req_id)

    async def _send(self, message: wire.ServerMessage) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the loop sees it end
            await self._websocket.send_text(wire.dumps(message))

    async def _log(self, event: str, **fields: str | int | float | bool) -> None:
        line = wire.LogMessage(
            event=event,
            logger=__name__,
            timestamp=datetime.now(UTC).isoformat(),
            fields=fields or None,
        )
        await self._send(line)


class _Progress:
    """Tells the client each warm-up stage, once, from the opening thread (or a download's)."""

    def __init__(self, websocket: WebSocket) -> None:
        self._send = ThreadSender(websocket)
        self._last: wire.Stage | None = None

    def __call__(self, event: ProgressEvent) -> None:
        stage = _STAGES.get(event.stage, wire.Stage.WARMUP_COMPILE)
        if stage is not self._last:
            self._last = stage
            self._send(wire.dumps(wire.StatusMessage(stage=stage)))

    async def drained(self) -> None:
        """Wait until the stages told so far have been sent."""
        await self._send.drained()


# -- helpers -------------------------------------------------------------------------------


class _SeedError(Exception):
    """An ``init`` whose seed image cannot be used: Biome's warning, and the typed error."""

    def __init__(self, warning: wire.MessageId, error: MotorpoolError) -> None:
        super().__init__(error.message)
        self.warning = warning
        self.error = error


def _seed_of(request: wire.Init) -> SeedFrame:
    if not request.seed_image_data:
        raise _SeedError(
            wire.MessageId.MISSING_SEED_DATA,
            InvalidRequest("'init' has no seed_image_data", hint="send a JPEG or PNG, base64"),
        )
    try:
        image = base64.b64decode(request.seed_image_data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _SeedError(
            wire.MessageId.INVALID_SEED_DATA, InvalidRequest(f"seed_image_data: {exc}")
        ) from exc
    if image.startswith(_JPEG_SIGNATURE):
        return SeedFrame(image=image, media_type="image/jpeg")
    if image.startswith(_PNG_SIGNATURE):
        return SeedFrame(image=image, media_type="image/png")
    raise _SeedError(
        wire.MessageId.INVALID_SEED_DATA, InvalidRequest("the seed image is neither JPEG nor PNG")
    )


def _error(
    error: MotorpoolError,
    message_id: wire.MessageId | None = None,
    params: dict[str, str] | None = None,
) -> wire.ErrorMessage:
    return wire.ErrorMessage(
        message_id=message_id,
        message=error.message,
        params=params,
        code=error.code,
        hint=error.hint,
    )


def _failure(
    req_id: str, error: MotorpoolError, message_id: wire.MessageId = wire.MessageId.INIT_FAILED
) -> wire.Failure:
    return wire.Failure(req_id=req_id, error_id=message_id, error=error.message, code=error.code)


async def _refuse(
    websocket: WebSocket, message: wire.ErrorMessage, code: CloseCode = CloseCode.BAD_REQUEST
) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(wire.dumps(message))
    await _close(websocket, code, message.message or "")


async def _close(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.close(code=code, reason=reason[:120])


def _system_info(handler: AppHandler) -> wire.SystemInfo:
    report = handler.host.hardware()
    first = report.accelerators[0] if report.accelerators else None
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return wire.SystemInfo(
        cpu_name=platform.processor() or None,
        gpu_name=first.name if first else None,
        vram_total_bytes=first.memory_bytes if first else None,
        torch_version=torch_version,
        gpu_count=len(report.accelerators),
    )
