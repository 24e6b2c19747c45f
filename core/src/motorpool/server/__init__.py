"""motorpool's server: OpenAI-compatible and native HTTP, SSE events, WebSocket sessions.

Needs the ``server`` extra (``pip install 'motorpool[server]'``).
"""

from motorpool.server._app import create_app, handler_of
from motorpool.server._handler import AppHandler
from motorpool.server._media import Blob, BlobStore, DirectoryBlobStore
from motorpool.server._serve import serve
from motorpool.server.wire import PROTOCOL_VERSION, wire_models

__all__ = [
    "PROTOCOL_VERSION",
    "AppHandler",
    "Blob",
    "BlobStore",
    "DirectoryBlobStore",
    "create_app",
    "handler_of",
    "serve",
    "wire_models",
]
