"""The Biome-compatible WebSocket (``/ws``), for Overworld's Biome desktop app."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from motorpool.errors import MotorpoolError
from motorpool.server._biome import serve_biome
from motorpool.server._deps import get_handler
from motorpool.server._security import check_key, socket_key
from motorpool.server._sessions import close_code

router = APIRouter()


@router.websocket("/ws")
async def biome_socket(websocket: WebSocket) -> None:
    """Biome's protocol (version 5); ``docs/server.md`` says what is supported."""
    handler = await get_handler(websocket)
    await websocket.accept()
    try:
        check_key(handler.settings, socket_key(websocket))
    except MotorpoolError as exc:
        await websocket.close(code=close_code(exc), reason=exc.message)
        return
    await serve_biome(websocket, handler)
