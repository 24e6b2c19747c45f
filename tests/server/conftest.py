"""Fixtures of the server tests (defined in ``tests/server/live.py``)."""

from tests.server.live import client, home, live, live_factory, make_app

__all__ = ["client", "home", "live", "live_factory", "make_app"]
