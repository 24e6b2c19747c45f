"""An interactive session on a world model, as the Python API and the server drive it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from motorpool.engine import Context, InteractiveSession, PendingBatch
from motorpool.errors import (
    Cancelled,
    EngineFailed,
    MotorpoolError,
    SessionExhausted,
    UnsupportedCapability,
)
from motorpool.types import ControlInput, FrameBatch, SessionConfig, SessionInfo

Reset = Literal["requested", "auto"] | None


def new_session_id() -> str:
    """A fresh session id (known before the session opens, so the opening can be cancelled)."""
    return f"session-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class _Generated:
    """A batch as the engine returned it, with what the session knows about it."""

    batch: FrameBatch | PendingBatch
    reset: Reset
    client_ts: float | None
    """Of the control the batch was made under."""

    def after_dropping(self, dropped: _Generated) -> _Generated:
        """This batch, also reporting what a dropped older one was the first to report."""
        return _Generated(
            self.batch,
            self.reset or dropped.reset,
            self.client_ts if self.client_ts is not None else dropped.client_ts,
        )


class Session:
    """Controls in, frame batches out. Controls may come from any thread.

    The newest control wins: inputs that arrive between two steps are merged (buttons
    as last pressed, mouse motion summed). Before a step that would overrun the model's
    context (:attr:`SessionInfo.max_frames`) the session resets to the seed frame
    (``auto_reset``) and marks that batch ``reset="auto"``.

    Two ways to consume it: :meth:`frames` (a generator at the caller's pace, every batch)
    and :meth:`run` (real time: encoding overlaps the next step, and batches a slow
    consumer cannot take are dropped and counted in :attr:`dropped`).
    """

    def __init__(
        self,
        engine: InteractiveSession,
        config: SessionConfig,
        context: Context,
        on_close: Callable[[], None],
    ) -> None:
        self.id = context.id
        self.config = config
        self.dropped = 0
        """Batches generated but never delivered (the consumer was slower than the model)."""
        self._engine = engine
        self._context = context
        self._on_close = on_close
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()  # step / reset / close never overlap
        self._pending: ControlInput | None = None
        self._held = ControlInput()
        self._running = threading.Event()
        self._running.set()
        self._reset_requested = False
        self._prompt: str | None = None
        self._frames_since_reset = 0
        self._closed = False
        try:
            self.info: SessionInfo = engine.info
        except Exception as exc:  # a plugin written before `info`, or a broken one
            self.close()
            raise self._failed(exc) from exc

    def __del__(self) -> None:
        # A session dropped without close() must not keep its exclusive model.
        self.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def fps(self) -> float | None:
        """Frames per second batches are paced to (``None``: as fast as the model goes).

        ``fps_cap`` when set, else the model's own rate when ``realtime``.
        """
        if self.config.fps_cap is not None:
            return self.config.fps_cap
        return self.info.fps if self.config.realtime else None

    def control(self, control: ControlInput) -> None:
        """Set the input for the next step (merged with any input not yet used)."""
        with self._lock:
            self._pending = control if self._pending is None else self._pending.merged_with(control)

    def pause(self) -> None:
        """Stop generating until :meth:`resume`."""
        self._running.clear()

    def resume(self) -> None:
        """Continue after :meth:`pause` (mouse motion sent while paused is dropped)."""
        with self._lock:
            if self._pending is not None:
                self._pending = self._pending.model_copy(update={"mouse_dx": 0.0, "mouse_dy": 0.0})
        self._running.set()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (a session cancelled by its id is not closed)."""
        return self._closed

    @property
    def paused(self) -> bool:
        """True while paused."""
        return not self._running.is_set()

    def reset(self) -> None:
        """Return to the seed frame before the next step."""
        with self._lock:
            self._reset_requested = True

    def prompt(self, prompt: str) -> None:
        """Change the text conditioning before the next step."""
        if not self.info.prompt_conditioning:
            raise UnsupportedCapability(
                "this world model has no prompt conditioning", hint="leave the prompt out"
            )
        with self._lock:
            self._prompt = prompt

    def step(self) -> FrameBatch:
        """Generate one batch now under the newest control."""
        return self._encoded(self._generate())

    def frames(self) -> Iterator[FrameBatch]:
        """Yield every batch, paced to :attr:`fps`, until the session is closed.

        The caller's pace is the session's: nothing is made while the caller holds a batch.
        """
        for generated in self._paced():
            yield self._encoded(generated)

    def run(self, deliver: Callable[[FrameBatch], None]) -> None:
        """Generate in real time until the session is closed, handing batches to ``deliver``.

        Batches are encoded on a thread of their own while the engine makes the next one,
        and reach ``deliver`` in order, on that thread. When encoding falls behind, the
        batch waiting for it is replaced by the newer one (counted in :attr:`dropped`).
        What encoding or ``deliver`` raises stops generating at once and is raised here;
        the session is then over (its steps raise :class:`~motorpool.errors.Cancelled`).
        """
        encoder = _Encoder(
            f"motorpool-{self.id}-encode",
            self._encoded,
            deliver,
            on_drop=self._drop,
            on_error=self._context.cancel,  # stop generating, even while paused
        )
        try:
            for generated in self._paced():
                encoder.put(generated)
        finally:
            error = encoder.finish()
        if error is not None:
            raise error

    def close(self) -> None:
        """End the session and give the model back. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._context.cancel()
        self._running.set()
        try:
            with self._engine_lock:  # a step running on another thread finishes first
                self._engine.close()
        finally:
            self._on_close()

    # -- internals -------------------------------------------------------------------------

    def _paced(self) -> Iterator[_Generated]:
        """Generated batches, paced to :attr:`fps`, until closed (paused: none)."""
        next_due = time.monotonic()
        while not self._closed and not self._context.cancelled:
            if not self._running.wait(timeout=0.1):
                continue
            if (fps := self.fps) is not None:  # wait before the step: the newest control
                if self._context.cancel_event.wait(max(0.0, next_due - time.monotonic())):
                    return  # closed or cancelled while waiting
                if not self._running.is_set():  # paused while waiting: no step
                    continue
                next_due = max(next_due, time.monotonic()) + self.info.frames_per_step / fps
            try:
                generated = self._generate()
            except Cancelled:
                if self._closed or self._context.cancelled:  # ended between two steps
                    return
                raise
            yield generated

    def _generate(self) -> _Generated:
        with self._lock:
            control, self._pending = self._pending, None
            requested, self._reset_requested = self._reset_requested, False
            prompt, self._prompt = self._prompt, None
        if control is None:  # held buttons stay pressed; motion happens once
            control = ControlInput(buttons=self._held.buttons)
        self._held = control
        with self._engine_lock:
            if self._closed or self._context.cancelled:  # closed, or the host shut down
                raise Cancelled(f"session {self.id} is closed")
            reset: Reset = "requested" if requested else None
            if reset is None and self._would_overrun():
                if not self.config.auto_reset:
                    raise SessionExhausted(
                        f"session {self.id} has used the model's {self.info.max_frames} "
                        "frames of context",
                        hint="reset the session, or open it with auto_reset",
                    )
                reset = "auto"
            try:
                if reset is not None:
                    self._engine.reset()
                    self._frames_since_reset = 0
                if prompt is not None:
                    self._engine.set_prompt(prompt)
                batch = self._engine.step(control)
            except MotorpoolError:
                raise
            except Exception as exc:  # the engine's own error, typed like every other
                raise self._failed(exc) from exc
            self._frames_since_reset += self.info.frames_per_step
        return _Generated(batch, reset, control.client_ts)

    def _would_overrun(self) -> bool:
        limit = self.info.max_frames
        return limit is not None and self._frames_since_reset + self.info.frames_per_step > limit

    def _encoded(self, generated: _Generated) -> FrameBatch:
        batch = generated.batch
        if isinstance(batch, PendingBatch):
            try:
                batch = batch.encode()
            except MotorpoolError:
                raise
            except Exception as exc:
                raise self._failed(exc) from exc
        marks: dict[str, object] = {}
        if generated.reset is not None:
            marks["reset"] = generated.reset
        if batch.client_ts is None and generated.client_ts is not None:
            marks["client_ts"] = generated.client_ts  # its control's, or a dropped one's
        return batch.model_copy(update=marks) if marks else batch

    def _drop(self) -> None:
        self.dropped += 1

    def _failed(self, exc: Exception) -> EngineFailed:
        return EngineFailed(f"session {self.id} failed: {type(exc).__name__}: {exc}")


class _Encoder:
    """A thread that encodes batches and delivers them in order; one batch waits at most."""

    def __init__(
        self,
        name: str,
        encode: Callable[[_Generated], FrameBatch],
        deliver: Callable[[FrameBatch], None],
        *,
        on_drop: Callable[[], None],
        on_error: Callable[[], None],
    ) -> None:
        self._encode = encode
        self._deliver = deliver
        self._on_drop = on_drop
        self._on_error = on_error
        self._waiting: _Generated | None = None
        self._done = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, generated: _Generated) -> None:
        """Queue a batch, replacing one still waiting. Raises what encoding raised."""
        with self._changed:
            if self._error is not None:
                raise self._error
            if self._waiting is not None:
                self._on_drop()
                generated = generated.after_dropping(self._waiting)
            self._waiting = generated
            self._changed.notify()

    def finish(self) -> BaseException | None:
        """Deliver what is waiting, stop the thread; return what encoding raised."""
        with self._changed:
            self._done = True
            self._changed.notify()
        self._thread.join()
        return self._error

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._waiting is not None or self._done)
                generated, self._waiting = self._waiting, None
            if generated is None:
                return
            try:
                self._deliver(self._encode(generated))
            except BaseException as exc:  # noqa: BLE001 - raised on the generating thread
                with self._changed:
                    self._error = exc
                self._on_error()
                return
