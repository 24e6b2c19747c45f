"""The server tests' fixtures: an app over the test engine, in-process or live on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from motorpool._settings import Settings
from motorpool.server import AppHandler, create_app, handler_of
from motorpool_testengine.plugin import write_model
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

MODELS_TOML = """
[models.tiny]
plugin = "testengine"
source = "{model}"

[models.slow]
plugin = "testengine"
source = "{model}"
options = {{ token_delay_s = 0.05, step_delay_s = 0.05 }}

[models.world]
plugin = "testengine"
source = "{model}"
options = {{ exclusive = true, step_delay_s = 0.01 }}

[models.broken]
plugin = "testengine"
source = "{model}"
options = {{ fail_load = true }}
"""
"""Aliases every server test can use: all the same test-engine model, tuned differently."""

AppFactory = Callable[..., FastAPI]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A motorpool home with a test model and the aliases above."""
    model = write_model(tmp_path / "tiny.mptest.json")
    (tmp_path / "models.toml").write_text(MODELS_TOML.format(model=model), encoding="utf-8")
    return tmp_path


def settings_for(home: Path, **overrides: Any) -> Settings:
    """Settings of a test server: this home, nothing from the environment's config."""
    return Settings(home=home, models_file=home / "models.toml", keep_alive_s=-1, **overrides)


@pytest.fixture
def make_app(home: Path) -> AppFactory:
    """Build an app over ``home``; keyword arguments override settings."""

    def make(**overrides: Any) -> FastAPI:
        return create_app(settings_for(home, **overrides))

    return make


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    """An in-process client of a default app (lifespan run, models unloaded after)."""
    with TestClient(make_app()) as test_client:
        yield test_client


@dataclass
class LiveServer:
    """A real uvicorn server on 127.0.0.1 and an ephemeral port."""

    url: str
    app: FastAPI
    server: uvicorn.Server

    @property
    def handler(self) -> AppHandler:
        """The application handler behind the server."""
        return handler_of(self.app)

    def openai(self, api_key: str = "unused") -> openai.OpenAI:
        """The official SDK pointed at this server."""
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0)


def wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Wait until ``server`` (running on ``thread``) accepts connections."""
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the server failed to start"
        assert time.monotonic() < deadline, "the server did not start in 10 s"
        time.sleep(0.01)


def start_live(app: FastAPI) -> tuple[LiveServer, threading.Thread]:
    """Run ``app`` under uvicorn on a thread until the returned server is told to exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_started(server, thread)
    port = server.servers[0].sockets[0].getsockname()[1]
    return LiveServer(f"http://127.0.0.1:{port}", app, server), thread


@pytest.fixture
def live_factory(make_app: AppFactory) -> Iterator[Callable[..., LiveServer]]:
    """Start live servers (settings overrides as keywords); all stop at the test's end."""
    running: list[tuple[LiveServer, threading.Thread]] = []

    def start(**overrides: Any) -> LiveServer:
        live, thread = start_live(make_app(**overrides))
        running.append((live, thread))
        return live

    yield start
    for live, thread in running:
        live.server.should_exit = True
        thread.join(15)


@pytest.fixture
def live(live_factory: Callable[..., LiveServer]) -> LiveServer:
    """A live server with default settings."""
    return live_factory()


def closed_with(
    ws: ClientConnection, timeout_s: float = 5.0
) -> tuple[int | None, list[dict[str, Any]]]:
    """Read a WebSocket until the server closes it: the close code and the JSON texts before."""
    texts: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            message = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(message, str):
                texts.append(json.loads(message))
    except ConnectionClosed:
        pass
    return ws.close_code, texts
