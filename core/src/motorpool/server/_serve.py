"""``motorpool serve``: uvicorn around the app, with a shutdown that cancels running work."""

from __future__ import annotations

from collections.abc import Sequence
from types import FrameType

import uvicorn

from motorpool._settings import Settings
from motorpool.server._app import create_app, handler_of
from motorpool.server._handler import AppHandler
from motorpool.server._security import check_bind

GRACEFUL_SHUTDOWN_S = 10


class _Server(uvicorn.Server):
    """On SIGINT/SIGTERM, cancel every request and session first, so streams end now."""

    def __init__(self, config: uvicorn.Config, handler: AppHandler) -> None:
        super().__init__(config)
        self._handler = handler

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Cancel running work, then let uvicorn close connections and run the lifespan."""
        self._handler.begin_shutdown()
        super().handle_exit(sig, frame)


def serve(settings: Settings, *, preload: Sequence[str] = ()) -> None:
    """Run the server until interrupted. Refuses a non-loopback bind without an API key."""
    check_bind(settings)
    app = create_app(settings, preload=preload)
    config = uvicorn.Config(
        app,
        host=settings.bind,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ws_max_size=int(settings.max_body_bytes),
        server_header=False,
    )
    _Server(config, handler_of(app)).run()
