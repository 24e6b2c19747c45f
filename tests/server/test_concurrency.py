"""Concurrency over a real socket: queue limits, disconnects, parallel models, shutdown.

The ``slow`` alias sleeps 50 ms per token and runs one request at a time, so a long
stream on it holds its only slot until the test lets go.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.server.live import LiveServer
from tests.support import Background, wait_until

LiveFactory = Callable[..., LiveServer]
HI = [{"role": "user", "content": "hi"}]
LONG = {"model": "slow", "messages": HI, "max_tokens": 1000}
"""A stream that would run for 50 s: it holds the slot until cancelled."""


# -- helpers -------------------------------------------------------------------------------


def add_alias(home: Path, name: str, **options: object) -> None:
    """Add a test-engine alias to the home's models file (before the app is made)."""
    source = str(home / "tiny.mptest.json")
    listed = ", ".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    with (home / "models.toml").open("a", encoding="utf-8") as file:
        file.write(
            f'\n[models.{name}]\nplugin = "testengine"\nsource = {json.dumps(source)}\n'
            f"options = {{ {listed} }}\n"
        )


def model_state(live: LiveServer, model: str) -> dict[str, Any]:
    """One model of ``GET /api/models`` (an empty dict when it is not loaded)."""
    models = httpx.get(f"{live.url}/api/models").json()["models"]
    return next((m for m in models if m["id"] == model), {})


def counts(live: LiveServer, model: str) -> tuple[int, int]:
    """Requests running on ``model`` and requests waiting for it."""
    state = model_state(live, model)
    return state.get("active_requests", 0), state.get("queued_requests", 0)


@contextmanager
def stream(live: LiveServer, body: dict[str, Any]) -> Iterator[Iterator[dict[str, Any] | str]]:
    """A streamed chat completion on its own connection; yields its parsed frames.

    Leaving the block closes the connection, as a client that goes away does.
    """
    with (
        httpx.Client(base_url=live.url, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200, response.read()

        def frames() -> Iterator[dict[str, Any] | str]:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    payload = line.removeprefix("data: ")
                    yield payload if payload == "[DONE]" else json.loads(payload)

        yield frames()


def has_content(frame: dict[str, Any] | str) -> bool:
    """Whether a frame carries generated text."""
    return (
        isinstance(frame, dict)
        and bool(frame["choices"])
        and bool(frame["choices"][0]["delta"].get("content"))
    )


def first_content(frames: Iterator[dict[str, Any] | str]) -> None:
    """Read until generated text arrives: the request holds a slot now."""
    for frame in frames:
        if has_content(frame):
            return
    raise AssertionError("the stream ended before any content")


def load(live: LiveServer, model: str) -> None:
    response = httpx.post(f"{live.url}/api/models/load", json={"model": model}, timeout=10)
    assert response.status_code == 200, response.text


def quick_chat(live: LiveServer, model: str = "slow") -> str | None:
    reply = live.openai().chat.completions.create(model=model, messages=HI, max_tokens=2)
    return reply.choices[0].message.content


# -- the queue -----------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_a_full_queue_answers_503_with_retry_after(
    live_factory: LiveFactory, *, streamed: bool
) -> None:
    live = live_factory(max_queue=0)
    with stream(live, LONG) as frames:
        first_content(frames)
        refused = httpx.post(
            f"{live.url}/v1/chat/completions",
            json={"model": "slow", "messages": HI, "max_tokens": 2, "stream": streamed},
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.json()["error"]["type"] == "server_error"
        with pytest.raises(openai.InternalServerError) as caught:
            quick_chat(live)
        assert caught.value.status_code == 503
        assert caught.value.code == "queue_full"
        assert caught.value.response.headers["retry-after"] == "1"
        # Other models have queues of their own.
        assert quick_chat(live, "tiny")
        assert counts(live, "slow") == (1, 0)
    wait_until(lambda: counts(live, "slow") == (0, 0), timeout_s=2)
    assert quick_chat(live)


def test_requests_wait_in_the_queue_in_order(live_factory: LiveFactory) -> None:
    live = live_factory(max_queue=2)
    load(live, "slow")
    client = live.openai()
    with stream(live, LONG) as frames:
        first_content(frames)

        def ask(seed: int) -> tuple[str | None, float]:
            reply = client.chat.completions.create(
                model="slow", messages=HI, max_tokens=2, seed=seed
            )
            return reply.choices[0].message.content, time.monotonic()

        waiting: list[Background] = []
        for queued in (1, 2):
            waiting.append(Background(lambda seed=queued: ask(seed)))
            wait_until(lambda queued=queued: counts(live, "slow") == (1, queued), timeout_s=2)
        with pytest.raises(openai.InternalServerError) as caught:
            quick_chat(live)
        assert caught.value.code == "queue_full"
    (first, first_done), (second, second_done) = [call.join(timeout_s=3) for call in waiting]
    assert first
    assert second
    assert first_done < second_done  # first come, first served
    wait_until(lambda: counts(live, "slow") == (0, 0), timeout_s=2)


# -- clients that leave --------------------------------------------------------------------


def test_a_client_leaving_mid_stream_frees_the_slot(live: LiveServer) -> None:
    started = time.monotonic()
    with stream(live, LONG) as frames:
        first_content(frames)
        assert counts(live, "slow") == (1, 0)
    wait_until(lambda: counts(live, "slow") == (0, 0), timeout_s=2)
    assert quick_chat(live)
    assert time.monotonic() - started < 3


def test_a_waiting_stream_whose_client_leaves_is_cancelled(live: LiveServer) -> None:
    with stream(live, LONG) as running:
        first_content(running)
        with stream(live, {**LONG, "max_tokens": 2}) as waiting:
            role = next(waiting)  # a chat stream opens with the role, before its slot
            assert isinstance(role, dict)
            assert role["choices"][0]["delta"]["role"] == "assistant"
            wait_until(lambda: counts(live, "slow") == (1, 1), timeout_s=2)
        wait_until(lambda: counts(live, "slow") == (1, 0), timeout_s=2)
    wait_until(lambda: counts(live, "slow") == (0, 0), timeout_s=2)
    assert quick_chat(live)


def test_a_waiting_request_whose_client_leaves_is_cancelled(live: LiveServer) -> None:
    load(live, "slow")
    with stream(live, LONG) as running:
        first_content(running)
        gave_up = threading.Event()

        def impatient() -> None:
            try:
                httpx.post(
                    f"{live.url}/v1/chat/completions",
                    json={"model": "slow", "messages": HI, "max_tokens": 2},
                    timeout=httpx.Timeout(10, read=0.3),
                )
            except httpx.ReadTimeout:  # the client closes its connection and goes
                gave_up.set()

        call = Background(impatient)
        wait_until(lambda: counts(live, "slow") == (1, 1), timeout_s=2)
        call.join(timeout_s=2)
        assert gave_up.is_set()
        wait_until(lambda: counts(live, "slow") == (1, 0), timeout_s=2)
    wait_until(lambda: counts(live, "slow") == (0, 0), timeout_s=2)
    assert quick_chat(live)


def test_a_client_leaving_while_its_model_loads_cancels_the_request(
    home: Path, live_factory: LiveFactory
) -> None:
    add_alias(home, "sluggish", load_delay_s=0.6)
    live = live_factory()

    def impatient() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{live.url}/v1/chat/completions",
                json={"model": "sluggish", "messages": HI, "max_tokens": 2},
                timeout=httpx.Timeout(10, read=0.2),
            )

    impatient()
    # The load goes on (another client may want the model), the request does not.
    wait_until(lambda: model_state(live, "sluggish").get("status") == "ready", timeout_s=3)
    assert counts(live, "sluggish") == (0, 0)
    assert quick_chat(live, "sluggish")


# -- parallel models -----------------------------------------------------------------------


def timed_stream(live: LiveServer, model: str, tokens: int) -> tuple[float, float]:
    """When a stream's first and last tokens arrived (monotonic seconds)."""
    arrivals: list[float] = []
    with stream(live, {"model": model, "messages": HI, "max_tokens": tokens}) as frames:
        arrivals.extend(time.monotonic() for frame in frames if has_content(frame))
    assert len(arrivals) == tokens
    return arrivals[0], arrivals[-1]


def run_together(live: LiveServer, models: list[str], tokens: int) -> list[tuple[float, float]]:
    with ThreadPoolExecutor(len(models)) as pool:
        return list(pool.map(lambda model: timed_stream(live, model, tokens), models))


def test_two_models_run_at_the_same_time(home: Path, live_factory: LiveFactory) -> None:
    add_alias(home, "slow2", token_delay_s=0.05)
    live = live_factory()
    load(live, "slow")
    load(live, "slow2")
    (a_first, a_last), (b_first, b_last) = run_together(live, ["slow", "slow2"], 6)
    assert a_first < b_last
    assert b_first < a_last


def test_one_model_runs_its_requests_one_at_a_time(live: LiveServer) -> None:
    load(live, "slow")
    windows = sorted(run_together(live, ["slow", "slow"], 4))
    (_, a_last), (b_first, _) = windows
    assert a_last <= b_first


def test_many_concurrent_requests_all_get_their_own_answer(live: LiveServer) -> None:
    client = live.openai()

    def ask(seed: int) -> str | None:
        reply = client.chat.completions.create(model="tiny", messages=HI, max_tokens=6, seed=seed)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, range(32)))
    alone = [ask(seed) for seed in range(32)]
    assert together == alone
    assert counts(live, "tiny") == (0, 0)


# -- shutdown ------------------------------------------------------------------------------


def test_shutdown_ends_streams_and_refuses_new_work(live: LiveServer) -> None:
    with stream(live, LONG) as frames:
        first_content(frames)
        live.handler.begin_shutdown()
        rest = list(frames)
    assert rest[-1] == "[DONE]"
    error = rest[-2]
    assert isinstance(error, dict)
    assert error["error"]["code"] == "cancelled"
    assert len(rest) < 100
    refused = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": "tiny", "messages": HI, "max_tokens": 2},
    )
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "host_closing"
    with pytest.raises(openai.InternalServerError) as caught:
        quick_chat(live, "tiny")
    assert caught.value.code == "host_closing"
    video = httpx.post(f"{live.url}/v1/videos", json={"model": "tiny", "prompt": "p"})
    assert video.status_code == 503
    assert httpx.get(f"{live.url}/ready").json()["status"] == "closing"
    assert httpx.get(f"{live.url}/health").status_code == 200


def test_shutdown_cancels_waiting_requests_and_video_jobs(live: LiveServer) -> None:
    load(live, "slow")
    client = live.openai()
    video = httpx.post(
        f"{live.url}/v1/videos",
        json={"model": "world", "prompt": "p", "frames": 5, "steps": 500},
    ).json()
    with stream(live, LONG) as frames:
        first_content(frames)
        waiting = Background(
            lambda: client.chat.completions.create(model="slow", messages=HI, max_tokens=2)
        )
        wait_until(lambda: counts(live, "slow") == (1, 1), timeout_s=2)
        wait_until(
            lambda: (
                httpx.get(f"{live.url}/v1/videos/{video['id']}").json()["status"] == "in_progress"
            ),
            timeout_s=2,
        )
        live.handler.begin_shutdown()
        assert list(frames)[-1] == "[DONE]"
    failure = waiting.join(timeout_s=2)
    assert isinstance(failure, openai.APIStatusError), failure
    assert failure.code == "cancelled"
    wait_until(
        lambda: httpx.get(f"{live.url}/v1/videos/{video['id']}").json()["status"] == "cancelled",
        timeout_s=2,
    )
    wait_until(lambda: counts(live, "slow") == (0, 0), timeout_s=2)
