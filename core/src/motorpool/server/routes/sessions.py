"""The interactive-session WebSocket."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from motorpool.errors import MotorpoolError
from motorpool.server._deps import get_handler
from motorpool.server._security import check_key, socket_key
from motorpool.server._sessions import close_code, serve_session

router = APIRouter()


@router.websocket("/v1/sessions/ws")
async def session_socket(websocket: WebSocket) -> None:
    """One interactive session per connection; ``docs/server.md`` has the protocol."""
    handler = await get_handler(websocket)
    await websocket.accept()
    try:
        check_key(handler.settings, socket_key(websocket))
    except MotorpoolError as exc:
        await websocket.close(code=close_code(exc), reason=exc.message)
        return
    await serve_session(websocket, handler)
