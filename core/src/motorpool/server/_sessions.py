"""Interactive sessions over a WebSocket: controls in, binary frame batches out.

Three parties share a session: the receive loop (client messages → session calls), a
generation thread (``Session.frames()``), and the send loop. Between the generation
thread and the send loop sits a one-batch mailbox: a newer batch replaces one the
client has not taken yet, and the drop is counted, so a slow client never makes the
server queue frames without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import structlog
from pydantic import ValidationError
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from motorpool._session import Session, new_session_id
from motorpool.errors import (
    Cancelled,
    EngineFailed,
    InvalidRequest,
    MotorpoolError,
    StorageFailed,
)
from motorpool.server._errors import validation_error
from motorpool.server._handler import AppHandler
from motorpool.server._security import check_key, socket_key
from motorpool.server.wire import PROTOCOL_VERSION
from motorpool.server.wire.sessions import (
    CLIENT_MESSAGE,
    ClientMessage,
    Close,
    CloseCode,
    Control,
    OpenSession,
    Pause,
    Reset,
    Resume,
    SessionClosed,
    SessionError,
    SessionProgress,
    SessionReady,
    SessionState,
    SetPrompt,
    encode_batch,
)
from motorpool.types import FrameBatch, ModelSpec, ProgressEvent, SeedFrame, SessionConfig

log = structlog.get_logger(__name__)

OPEN_TIMEOUT_S = 30.0
MAX_EARLY_MESSAGES = 64
"""Messages a client may send after 'open' and before 'ready' (kept until the session opens)."""
CANCEL_RETRY_S = 0.05
"""How often a departed client's opening is asked to stop until the host knows it."""


def close_code(error: MotorpoolError) -> CloseCode:
    """The close code of a fatal typed error."""
    try:
        return CloseCode(4000 + error.status)
    except ValueError:
        return CloseCode.INVALID if error.is_client_error else CloseCode.INTERNAL_ERROR


class Mailbox:
    """Holds the newest batch for the send loop; replacing an unsent one counts a drop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._batch: FrameBatch | None = None
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.sent = 0
        self.ended: MotorpoolError | bool = False
        """``True`` once generation has ended, or the error that ended it."""

    def put(self, batch: FrameBatch) -> None:
        with self._lock:
            if self._batch is not None:
                self.dropped += 1
                batch = batch.after_dropping(self._batch)
            self._batch = batch
        self._wake()

    def end(self, error: MotorpoolError | None) -> None:
        with self._lock:
            self.ended = error if error is not None else True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> FrameBatch | None:
        """The next batch, or ``None`` once generation has ended."""
        while True:
            with self._lock:  # the batch and the end together: the last batch is never lost
                batch, self._batch = self._batch, None
                ended = self.ended is not False
            if batch is not None:
                return batch
            if ended:  # checked before waiting: its wake-up may be spent
                return None
            await self._ready.wait()
            self._ready.clear()


async def accept(websocket: WebSocket, handler: AppHandler) -> bool:
    """Accept a session socket if its API key is right; else close it (4401) and say no."""
    await websocket.accept()
    try:
        check_key(handler.settings, socket_key(websocket))
    except MotorpoolError as exc:
        await websocket.close(code=close_code(exc), reason=exc.message)
        return False
    return True


async def serve_session(websocket: WebSocket, handler: AppHandler) -> None:
    """Run one session on an accepted socket until either side ends it."""
    version = websocket.query_params.get("protocol")
    if version != str(PROTOCOL_VERSION):
        await _fail(
            websocket,
            InvalidRequest(
                f"protocol version {version!r} is not supported",
                hint=f"connect with ?protocol={PROTOCOL_VERSION}",
            ),
            CloseCode.BAD_REQUEST,
        )
        return
    try:
        with anyio.fail_after(OPEN_TIMEOUT_S):
            first = await _receive(websocket)
        if not isinstance(first, OpenSession):
            raise InvalidRequest(f"the first message must be 'open', not {first.type!r}")
    except MotorpoolError as exc:  # malformed, binary, or not 'open': a protocol error
        await _fail(websocket, exc, CloseCode.BAD_REQUEST)
        return
    except TimeoutError:
        await _fail(websocket, InvalidRequest("no 'open' message"), CloseCode.BAD_REQUEST)
        return
    except WebSocketDisconnect:
        return
    try:
        opened = await _open_watching(websocket, handler, first)
    except MotorpoolError as exc:
        await _fail(websocket, exc, close_code(exc))
        return
    if opened is None:  # the client left while it opened, or was refused
        return
    session, early = opened
    bound = log.bind(session_id=session.id, model=first.model)
    bound.info("session opened")
    try:
        await _run(websocket, session, first.model, handler, early)
    finally:
        await anyio.to_thread.run_sync(session.close)
        bound.info("session closed")


RECORDINGS = "recordings"
"""Folder in the server's home that ``record_path`` file names are written to."""


def recording_path(handler: AppHandler, name: str) -> str:
    """Where a client's ``record_path`` goes: a bare file name in the recordings folder."""
    if Path(name).name != name or name in {".", ".."} or not name.endswith(".mp4"):
        raise InvalidRequest(
            f"record_path {name!r} must be a bare file name ending in .mp4",
            hint=f"the server writes it in {RECORDINGS}/ under its home",
        )
    folder = handler.settings.home / RECORDINGS
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageFailed(f"cannot make the recordings folder {folder}: {exc}") from exc
    return str(folder / name)


async def _open_watching(
    websocket: WebSocket, handler: AppHandler, first: OpenSession
) -> tuple[Session, list[Message]] | None:
    """Open the session while watching the socket; ``None`` when the client left meanwhile.

    A client that leaves cancels its opening, which gives back its place in the model's
    queue or stops waiting for the model's load; a session that opened all the same is
    closed. Messages the client sends meanwhile are kept, for the session to take first;
    past :data:`MAX_EARLY_MESSAGES` the opening is cancelled and the client refused (4400).
    """
    session_id = new_session_id()
    early: list[Message] = []
    left = False
    refused: InvalidRequest | None = None

    async def watch() -> None:
        nonlocal left, refused
        while (message := await websocket.receive())["type"] != "websocket.disconnect":
            early.append(message)
            if len(early) > MAX_EARLY_MESSAGES:
                refused = InvalidRequest(
                    f"more than {MAX_EARLY_MESSAGES} messages before 'ready'",
                    hint="wait for 'ready' before sending controls",
                )
                break
        else:
            left = True
        # This task is cancelled as soon as the opening ends: until then it is opening.
        await cancel_opening(handler, session_id, still_opening=lambda: True)

    session: Session | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            session = await open_session(websocket, handler, first, session_id)
        except Exception as exc:  # noqa: BLE001 - raised below, outside the group: not grouped
            failure = exc
        group.cancel_scope.cancel()
    if left or refused is not None:
        if session is not None:
            await anyio.to_thread.run_sync(session.close)
        if refused is not None:
            await _fail(websocket, refused, CloseCode.BAD_REQUEST)
        return None
    if failure is not None:
        raise failure
    assert session is not None  # opened, or failed above
    return session, early


async def cancel_opening(
    handler: AppHandler, session_id: str, still_opening: Callable[[], bool]
) -> None:
    """Stop the opening of a session nobody is left to take.

    Its thread may not have registered the session with the host yet: asked again until
    the host knows it, or until the opening has ended either way.
    """
    while still_opening() and not handler.host.cancel(session_id):
        await anyio.sleep(CANCEL_RETRY_S)


async def open_session(
    websocket: WebSocket, handler: AppHandler, first: OpenSession, session_id: str
) -> Session:
    """Open the session a client asked for, telling it each stage before the first frame."""
    spec = handler.client_spec(first.model)
    seed = SeedFrame(image=first.seed_image, media_type=first.seed_media_type)
    config = first.config
    if config.record_path is not None:
        config = config.model_copy(
            update={"record_path": recording_path(handler, config.record_path)}
        )

    send = ThreadSender(websocket)

    def progress(event: ProgressEvent) -> None:  # on the opening thread, or a download's
        message = SessionProgress(stage=event.stage, step=event.step, total=event.total)
        send(message.model_dump_json())

    try:
        return await start_session(handler, spec, seed, config, progress, session_id=session_id)
    finally:
        await send.drained()  # every stage before 'ready', or before the error


async def start_session(
    handler: AppHandler,
    spec: ModelSpec,
    seed: SeedFrame,
    config: SessionConfig,
    on_progress: Callable[[ProgressEvent], None],
    *,
    session_id: str | None = None,
) -> Session:
    """Open a session on a worker thread; ``on_progress`` hears its warm-up stages there."""
    return await anyio.to_thread.run_sync(
        lambda: handler.host.session(
            spec, seed=seed, config=config, on_progress=on_progress, session_id=session_id
        )
    )


class ThreadSender:
    """Sends text on a WebSocket from threads that are not the event loop's.

    Made on the event loop; callable from any other thread (the opening thread, a hub
    download's worker threads), and returns at once: a slow client never holds up the
    work that reports to it. Messages go in the order of the calls; :meth:`drained`
    waits until they have all gone. A client that has left is no error.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._loop = asyncio.get_running_loop()
        self._last: asyncio.Task[None] | None = None  # read and written on the loop only

    def __call__(self, text: str) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has ended: nobody to tell
            self._loop.call_soon_threadsafe(self._queue, text)

    async def drained(self) -> None:
        """Wait until every message asked for so far has been sent (or dropped)."""
        while (last := self._last) is not None and not last.done():
            await asyncio.wait({last})

    def _queue(self, text: str) -> None:
        self._last = asyncio.ensure_future(self._send_after(self._last, text))

    async def _send_after(self, previous: asyncio.Task[None] | None, text: str) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # order; never raises (each send is guarded)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):  # the client left
            await self._websocket.send_text(text)


def generate_into(session: Session, mailbox: Mailbox, handler: AppHandler) -> threading.Thread:
    """Run ``session`` in real time on a thread of its own, its batches going to ``mailbox``.

    The mailbox ends with the error that ended the session: ``cancelled`` when it was
    cancelled by its id, ``engine_error`` for a failure that was not a typed error (logged
    with its traceback); with none when it was closed here or the server is shutting down.
    """

    def generate() -> None:
        error: MotorpoolError | None = None
        try:
            session.run(mailbox.put)
            if not session.closed:  # it ended without close(): it was cancelled
                error = Cancelled(f"session {session.id} was cancelled")
        except MotorpoolError as exc:
            error = exc
        except Exception as exc:  # a bug, not a typed error: the client is told, the log has it
            log.exception("session failed", session_id=session.id)
            error = EngineFailed(f"the session failed: {type(exc).__name__}: {exc}")
        finally:
            if session.closed or (isinstance(error, Cancelled) and handler.closing):
                error = None  # closed on purpose, or the server is going away
            mailbox.end(error)

    thread = threading.Thread(target=generate, name=f"motorpool-{session.id}", daemon=True)
    thread.start()
    return thread


async def _run(
    websocket: WebSocket,
    session: Session,
    model: str,
    handler: AppHandler,
    early: list[Message],
) -> None:
    mailbox = Mailbox(asyncio.get_running_loop())
    await websocket.send_text(
        SessionReady(
            session_id=session.id,
            model=model,
            protocol_version=PROTOCOL_VERSION,
            info=session.info,
            fps=session.fps,
        ).model_dump_json()
    )
    generate_into(session, mailbox, handler)
    async with anyio.create_task_group() as group:

        async def send_frames() -> None:
            # The client left, or the receive loop closed the socket: the session ends.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                while (batch := await mailbox.take()) is not None:
                    dropped = mailbox.dropped + session.dropped
                    await websocket.send_bytes(encode_batch(batch, dropped=dropped))
                    mailbox.sent += 1
                ended = mailbox.ended
                if isinstance(ended, MotorpoolError):
                    await _fail(websocket, ended, close_code(ended))
                else:
                    await _close(websocket, "the server is shutting down", CloseCode.GOING_AWAY)
            group.cancel_scope.cancel()

        group.start_soon(send_frames)
        # The client left, or the send loop closed the socket (an answer to a control then
        # finds it closed): the session closes.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await _receive_controls(websocket, session, mailbox, early)
        group.cancel_scope.cancel()


async def _receive_controls(
    websocket: WebSocket, session: Session, mailbox: Mailbox, early: list[Message]
) -> None:
    """Apply the client's messages: those sent while the session opened, then the rest."""
    waiting = deque(early)
    while True:
        try:
            message = _parse(waiting.popleft() if waiting else await websocket.receive())
        except MotorpoolError as exc:  # a bad message is reported; the session goes on
            await websocket.send_text(_error(exc).model_dump_json())
            continue
        match message:
            case Control(input=control):
                session.control(control)
                continue
            case Pause():
                session.pause()
            case Resume():
                session.resume()
            case Reset():
                session.reset()
            case SetPrompt(prompt=prompt):
                try:
                    session.prompt(prompt)
                except MotorpoolError as exc:  # a model without prompts: the session goes on
                    await websocket.send_text(_error(exc).model_dump_json())
                    continue
            case Close():
                await _close(websocket, "closed by the client", CloseCode.NORMAL)
                return
            case OpenSession():
                await websocket.send_text(
                    _error(InvalidRequest("this socket already has a session")).model_dump_json()
                )
                continue
        state = SessionState(
            paused=session.paused,
            frames_sent=mailbox.sent,
            frames_dropped=mailbox.dropped + session.dropped,
        )
        await websocket.send_text(state.model_dump_json())


async def _receive(websocket: WebSocket) -> ClientMessage:
    return _parse(await websocket.receive())


def _parse(message: Message) -> ClientMessage:
    """A client message; a disconnect raises ``WebSocketDisconnect``, bad input a typed error."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(int(message.get("code", CloseCode.NORMAL)))
    text = message.get("text")
    if text is None:
        raise InvalidRequest("send control messages as JSON text, not binary")
    try:
        return CLIENT_MESSAGE.validate_json(text)
    except ValidationError as exc:
        error, _ = validation_error(exc.errors())
        raise error from exc


def _error(error: MotorpoolError) -> SessionError:
    return SessionError(code=error.code, message=error.message, hint=error.hint)


async def _fail(websocket: WebSocket, error: MotorpoolError, code: CloseCode) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(_error(error).model_dump_json())
    await _close(websocket, error.message, code)


async def _close(websocket: WebSocket, reason: str, code: CloseCode) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(SessionClosed(reason=reason).model_dump_json())
        await websocket.close(code=code, reason=reason[:120])
