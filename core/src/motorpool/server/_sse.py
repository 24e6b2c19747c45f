"""Server-sent events: encoding, and a response that notices a client leaving at once."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import anyio
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from motorpool.server._bridge import wait_for_disconnect

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(message: BaseModel, *, event: str | None = None) -> bytes:
    """One ``data:`` frame holding a model as JSON (optionally named)."""
    data = message.model_dump_json(exclude_none=False).encode()
    prefix = b"" if event is None else b"event: " + event.encode() + b"\n"
    return prefix + b"data: " + data + b"\n\n"


class EventStreamResponse(Response):
    """Streams SSE frames; when the client disconnects, ``on_disconnect`` runs at once.

    Starlette's streaming response only notices a disconnect at its next write, which
    for a request waiting in a queue or a slow model may be a long time away.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncGenerator[bytes],
        *,
        on_disconnect: Callable[[], None],
        headers: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        super().__init__(status_code=status_code, headers={**SSE_HEADERS, **(headers or {})})
        # Response declares its (empty) body's length; a stream has none, and h11 refuses
        # to send more bytes than were declared.
        del self.headers["content-length"]
        self._frames = frames
        self._on_disconnect = on_disconnect

    async def __call__(self, _scope: Scope, receive: Receive, send: Send) -> None:
        """Send frames until they end or the client leaves."""
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await wait_for_disconnect(receive)
                self._on_disconnect()
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            try:
                async for frame in self._frames:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the client went away mid-write
                self._on_disconnect()
            finally:
                group.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):  # run the frames' cleanup now, not at GC
                    await self._frames.aclose()
