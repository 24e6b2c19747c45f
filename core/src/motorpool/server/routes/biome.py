"""The Biome-compatible WebSocket (``/ws``), for Overworld's Biome desktop app."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from motorpool.server._biome import serve_biome
from motorpool.server._deps import get_handler
from motorpool.server._sessions import accept

router = APIRouter()


@router.websocket("/ws")
async def biome_socket(websocket: WebSocket) -> None:
    """Biome's protocol (version 5); ``docs/server.md`` says what is supported."""
    handler = await get_handler(websocket)
    if await accept(websocket, handler):
        await serve_biome(websocket, handler)
