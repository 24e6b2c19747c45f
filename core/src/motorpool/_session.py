"""An interactive session on a world model, as the Python API and the server drive it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from motorpool.engine import Context, InteractiveSession
from motorpool.errors import Cancelled, EngineFailed, MotorpoolError
from motorpool.types import ControlInput, FrameBatch, SessionConfig


class Session:
    """Controls in, frame batches out. Controls may come from any thread.

    The newest control wins: inputs that arrive between two steps are merged (buttons
    as last pressed, mouse motion summed). ``frames()`` runs the engine on the caller's
    thread and paces to ``config.fps_cap``.
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
        self._closed = False

    def __del__(self) -> None:
        # A session dropped without close() must not keep its exclusive model.
        self.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def control(self, control: ControlInput) -> None:
        """Set the input for the next step (merged with any input not yet used)."""
        with self._lock:
            self._pending = control if self._pending is None else self._pending.merged_with(control)

    def pause(self) -> None:
        """Stop generating until :meth:`resume`."""
        self._running.clear()

    def resume(self) -> None:
        """Continue after :meth:`pause`."""
        self._running.set()

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
        with self._lock:
            self._prompt = prompt

    def step(self) -> FrameBatch:
        """Generate one batch now under the newest control."""
        with self._lock:
            control, self._pending = self._pending, None
            reset, self._reset_requested = self._reset_requested, False
            prompt, self._prompt = self._prompt, None
        if control is None:  # held buttons stay pressed; motion happens once
            control = ControlInput(buttons=self._held.buttons)
        self._held = control
        with self._engine_lock:
            if self._closed or self._context.cancelled:  # closed, or the host shut down
                raise Cancelled(f"session {self.id} is closed")
            try:
                if reset:
                    self._engine.reset()
                if prompt is not None:
                    self._engine.set_prompt(prompt)
                return self._engine.step(control)
            except MotorpoolError:
                raise
            except Exception as exc:  # the engine's own error, typed like every other
                raise EngineFailed(
                    f"session {self.id} failed: {type(exc).__name__}: {exc}"
                ) from exc

    def frames(self) -> Iterator[FrameBatch]:
        """Yield batches until the session is closed or cancelled."""
        next_due = time.monotonic()
        while not self._closed and not self._context.cancelled:
            if not self._running.wait(timeout=0.1):
                continue
            try:
                batch = self.step()
            except Cancelled:
                if self._closed or self._context.cancelled:  # ended between two steps
                    return
                raise
            if self.config.fps_cap is not None:
                next_due += len(batch.frames) / self.config.fps_cap
                time.sleep(max(0.0, next_due - time.monotonic()))
                next_due = max(next_due, time.monotonic())
            yield batch

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
