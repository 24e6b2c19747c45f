"""The interactive-session WebSocket."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from motorpool.server._deps import get_handler
from motorpool.server._sessions import accept, serve_session

router = APIRouter()


@router.websocket("/v1/sessions/ws")
async def session_socket(websocket: WebSocket) -> None:
    """One interactive session per connection; ``docs/server.md`` has the protocol."""
    handler = await get_handler(websocket)
    if await accept(websocket, handler):
        await serve_session(websocket, handler)
