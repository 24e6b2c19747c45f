"""The OpenAI-compatible and native APIs over a real socket, through the official SDK.

No mocks: a live uvicorn server over the test engine. The test engine samples words
``w0``..``w63`` (and ``<eos>``) with a seeded RNG; at ``temperature=0`` it says
``w0 w1 w2 ...`` in order and ends with ``<eos>`` (finish ``stop``) after 64 words.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import motorpool_testengine.plugin
import openai
import pytest
from motorpool._host import Host
from motorpool.errors import Cancelled
from motorpool.server._media import DirectoryBlobStore
from motorpool.server._videos import VideoJobs, video_request
from motorpool.server.wire import openai as oa
from motorpool.types import (
    ErrorEvent,
    GeneratedImage,
    ImageResult,
    ModelSpec,
    ResultEvent,
    StreamEvent,
    Timings,
    VideoResult,
)
from motorpool_testengine._png import PNG_SIGNATURE, encode_png, png_size, split_pngs
from motorpool_testengine.plugin import VIDEO_MEDIA_TYPE

from tests.server.live import LiveServer
from tests.support import Background, wait_until

LiveFactory = Callable[..., LiveServer]
HI = [{"role": "user", "content": "hi"}]
DONE = "data: [DONE]\n\n"
SORA = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
"""The SDK's video methods warn that OpenAI's own video API will close; ours stays."""


# -- helpers -------------------------------------------------------------------------------


def add_alias(home: Path, name: str, **options: object) -> None:
    """Add a test-engine alias to the home's models file (before the app is made)."""
    models = home / "models.toml"
    source = str(home / "tiny.mptest.json")
    listed = ", ".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    with models.open("a", encoding="utf-8") as file:
        file.write(
            f'\n[models.{name}]\nplugin = "testengine"\nsource = {json.dumps(source)}\n'
            f"options = {{ {listed} }}\n"
        )


def frames_of(body: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (``[DONE]`` included)."""
    assert body.endswith(DONE), body[-200:]
    frames: list[str] = []
    for block in body.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        frames.append(block.removeprefix("data: "))
    return frames


def json_frames(body: str) -> list[dict[str, Any]]:
    """Every frame but the final ``[DONE]``, parsed (each must be JSON)."""
    frames = frames_of(body)
    assert frames[-1] == "[DONE]"
    assert "[DONE]" not in frames[:-1]
    return [json.loads(frame) for frame in frames[:-1]]


def models_by_id(live: LiveServer) -> dict[str, dict[str, Any]]:
    """``GET /api/models`` keyed by model id."""
    response = httpx.get(f"{live.url}/api/models")
    assert response.status_code == 200
    return {model["id"]: model for model in response.json()["models"]}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The body of an error envelope."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    return error


@contextmanager
def open_stream(
    live: LiveServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Iterator[tuple[httpx.Response, Iterator[str]]]:
    """POST a streamed chat completion; yields the response and its SSE payloads."""
    with (
        httpx.Client(base_url=live.url, timeout=10) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={"stream": True, **body}, headers=headers
        ) as response,
    ):

        def payloads() -> Iterator[str]:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield line.removeprefix("data: ")

        yield response, payloads()


def next_content(payloads: Iterator[str]) -> dict[str, Any]:
    """Read frames until one carries generated text."""
    for payload in payloads:
        chunk = json.loads(payload)
        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
            return chunk
    raise AssertionError("the stream ended before any content")


# -- models --------------------------------------------------------------------------------


def test_models_lists_every_alias(live: LiveServer) -> None:
    models = live.openai().models.list()
    ids = [model.id for model in models]
    assert {"tiny", "slow", "world", "broken"} <= set(ids)
    assert len(ids) == len(set(ids))
    for model in models:
        assert model.object == "model"
        assert model.owned_by == "testengine"


def test_models_shows_a_loaded_model_as_ready(live: LiveServer) -> None:
    before = {m["id"]: m for m in httpx.get(f"{live.url}/v1/models").json()["data"]}
    assert before["tiny"]["status"] == "available"
    live.openai().chat.completions.create(model="tiny", messages=HI, max_tokens=1)
    after = {m["id"]: m for m in httpx.get(f"{live.url}/v1/models").json()["data"]}
    assert after["tiny"]["status"] == "ready"
    assert after["slow"]["status"] == "available"


# -- chat and completions ------------------------------------------------------------------


def test_chat_completion_stops_at_max_tokens(live: LiveServer) -> None:
    reply = live.openai().chat.completions.create(
        model="tiny", messages=HI, max_tokens=4, temperature=0
    )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "tiny"
    (choice,) = reply.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "w0 w1 w2 w3"
    assert choice.finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


def test_max_completion_tokens_counts_like_max_tokens(live: LiveServer) -> None:
    reply = live.openai().chat.completions.create(
        model="tiny", messages=HI, max_completion_tokens=2, temperature=0
    )
    assert reply.choices[0].message.content == "w0 w1"
    assert reply.choices[0].finish_reason == "length"


def test_stop_sequence_ends_with_stop(live: LiveServer) -> None:
    reply = live.openai().chat.completions.create(
        model="tiny", messages=HI, max_tokens=10, temperature=0, stop=[" w3", "never"]
    )
    assert reply.choices[0].message.content == "w0 w1 w2"
    assert reply.choices[0].finish_reason == "stop"


def test_end_of_sequence_ends_with_stop(live: LiveServer) -> None:
    reply = live.openai().chat.completions.create(
        model="tiny", messages=HI, max_tokens=100, temperature=0
    )
    content = reply.choices[0].message.content
    assert content is not None
    assert content.split() == [f"w{i}" for i in range(64)]  # then <eos>, not shown
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 65


def test_same_seed_same_text(live: LiveServer) -> None:
    client = live.openai()

    def text(seed: int) -> str | None:
        reply = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, seed=seed)
        return reply.choices[0].message.content

    first = text(7)
    assert first
    assert text(7) == first
    assert text(8) != first


def test_completions_endpoint(live: LiveServer) -> None:
    reply = live.openai().completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=3, temperature=0
    )
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    (choice,) = reply.choices
    assert choice.text == "w0 w1 w2"
    assert choice.finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 4
    assert reply.usage.completion_tokens == 3


def test_completions_stream(live: LiveServer) -> None:
    chunks = list(
        live.openai().completions.create(
            model="tiny", prompt="Once", max_tokens=3, temperature=0, stream=True
        )
    )
    assert "".join(chunk.choices[0].text for chunk in chunks) == "w0 w1 w2"
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "length"]


def test_chat_stream_through_the_sdk(live: LiveServer) -> None:
    stream = live.openai().chat.completions.create(
        model="tiny",
        messages=HI,
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert not first.choices[0].delta.content
    assert first.choices[0].finish_reason is None
    assert [c.choices[0].finish_reason for c in middle] == [None] * 5
    assert "".join(c.choices[0].delta.content or "" for c in middle) == "w0 w1 w2 w3 w4"
    assert finish.choices[0].finish_reason == "length"
    assert not finish.choices[0].delta.content
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == 5
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + 5


def test_chat_stream_without_usage_ends_with_the_finish_chunk(live: LiveServer) -> None:
    chunks = list(
        live.openai().chat.completions.create(
            model="tiny", messages=HI, max_tokens=3, temperature=0, stop="w2", stream=True
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w0 w1 "


def test_raw_sse_is_well_formed(live: LiveServer) -> None:
    request = {
        "model": "tiny",
        "messages": HI,
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.Client(base_url=live.url) as http:
        response = http.post(
            "/v1/chat/completions", json=request, headers={"X-Request-ID": "raw-sse-1"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-request-id"] == "raw-sse-1"
    assert response.text.endswith("data: [DONE]\n\n")
    chunks = json_frames(response.text)
    assert all(chunk["id"] == "chatcmpl-raw-sse-1" for chunk in chunks)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_a_model_is_loaded_just_in_time(live: LiveServer) -> None:
    assert "tiny" not in models_by_id(live)
    reply = live.openai().chat.completions.create(model="tiny", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content
    model = models_by_id(live)["tiny"]
    assert model["status"] == "ready"
    assert model["plugin"] == "testengine"
    assert model["active_requests"] == 0
    assert "slow" not in models_by_id(live)


def test_unknown_model_is_not_found(live: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        live.openai().chat.completions.create(model="no-such-model", messages=HI)
    error = caught.value
    assert error.status_code == 404
    assert error.code == "unknown_model"
    assert error.type == "invalid_request_error"
    assert isinstance(error.body, dict)
    assert "no-such-model" in str(error.body["message"])


def test_a_failing_load_is_a_typed_server_error(live: LiveServer) -> None:
    client = live.openai()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="broken", messages=HI, max_tokens=2)
    assert caught.value.status_code == 500
    assert caught.value.code == "load_failed"
    assert caught.value.type == "server_error"
    assert "fail_load" in str(caught.value.body)
    assert models_by_id(live)["broken"]["status"] == "failed"
    # The server goes on serving other models (and the broken one fails the same way).
    reply = client.chat.completions.create(model="tiny", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=HI, max_tokens=2)


def test_a_plugin_failing_mid_stream_ends_with_an_error_frame(
    home: Path, live_factory: LiveFactory
) -> None:
    add_alias(home, "flaky", fail_after_tokens=2)
    live = live_factory()
    request = {"model": "flaky", "messages": HI, "max_tokens": 10, "stream": True}
    response = httpx.post(f"{live.url}/v1/chat/completions", json=request)
    assert response.status_code == 200
    chunks = json_frames(response.text)
    role, *tokens, failure = chunks
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert len(tokens) == 2
    assert all(t["choices"][0]["finish_reason"] is None for t in tokens)
    assert failure["error"]["code"] == "engine_error"
    assert failure["error"]["type"] == "server_error"
    assert "failing on purpose" in failure["error"]["message"]
    # The SDK turns the error frame into an exception...
    client = live.openai()
    stream = client.chat.completions.create(model="flaky", messages=HI, max_tokens=10, stream=True)
    with pytest.raises(openai.APIError, match="failing on purpose"):
        list(stream)
    # ... and the server keeps serving, that model included (its slot was given back).
    assert models_by_id(live)["flaky"]["active_requests"] == 0
    reply = client.chat.completions.create(model="tiny", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content
    reply = client.chat.completions.create(model="flaky", messages=HI, max_tokens=2)
    assert reply.choices[0].finish_reason == "length"


def test_a_non_streamed_engine_failure_is_a_500(home: Path, live_factory: LiveFactory) -> None:
    add_alias(home, "flaky", fail_after_tokens=1)
    live = live_factory()
    with pytest.raises(openai.InternalServerError) as caught:
        live.openai().chat.completions.create(model="flaky", messages=HI, max_tokens=5)
    assert caught.value.code == "engine_error"


def test_invalid_requests_name_the_field(live: LiveServer) -> None:
    client = live.openai()
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=0)
    assert caught.value.code == "invalid_request"
    assert caught.value.body is not None
    assert "max_tokens" in str(caught.value.body)
    with pytest.raises(openai.UnprocessableEntityError, match="unknown field"):
        client.chat.completions.create(
            model="tiny", messages=HI, extra_body={"frequency_wobble": 1}
        )


# -- images --------------------------------------------------------------------------------


def test_images_as_base64(live: LiveServer) -> None:
    client = live.openai()
    result = client.images.generate(
        model="tiny",
        prompt="a gradient",
        size="64x48",  # any WxH, not only OpenAI's sizes
        n=2,
        response_format="b64_json",
        extra_body={"seed": 5, "steps": 2},
    )
    assert result.data is not None
    assert len(result.data) == 2
    images = [base64.b64decode(image.b64_json or "") for image in result.data]
    for image in images:
        assert image.startswith(PNG_SIGNATURE)
        assert png_size(image) == (64, 48)
    # The test engine draws image i from seed + i: the bytes are predictable.
    assert images == [encode_png(64, 48, seed=5), encode_png(64, 48, seed=6)]
    again = client.images.generate(
        model="tiny", prompt="a gradient", size="64x48", extra_body={"seed": 5}
    )
    assert again.data is not None
    assert base64.b64decode(again.data[0].b64_json or "") == images[0]


def test_images_as_urls(live: LiveServer) -> None:
    result = live.openai().images.generate(
        model="tiny", prompt="a gradient", size="32x16", response_format="url"
    )
    assert result.data is not None
    (image,) = result.data
    assert image.b64_json is None
    assert image.url is not None
    assert image.url.startswith(f"{live.url}/v1/files/")
    response = httpx.get(image.url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert png_size(response.content) == (32, 16)
    missing = httpx.get(f"{live.url}/v1/files/nothing-here.png")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"


def test_images_reject_sizes_the_engine_cannot_do(live: LiveServer) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        live.openai().images.generate(model="tiny", prompt="x", size="30x30")
    assert caught.value.code == "invalid_request"
    with pytest.raises(openai.UnprocessableEntityError):
        live.openai().images.generate(model="tiny", prompt="x", size="big")


# -- videos --------------------------------------------------------------------------------


@SORA
def test_video_job_through_the_sdk(live: LiveServer) -> None:
    client = live.openai()
    job = client.videos.create(
        model="slow",
        prompt="a drifting gradient",
        size="32x24",
        extra_body={"frames": 9, "steps": 6, "seed": 3},
    )
    assert job.id.startswith("video_")
    assert job.status in {"queued", "in_progress"}
    assert job.size == "32x24"
    progress: list[int] = [job.progress]

    def completed() -> bool:
        view = client.videos.retrieve(job.id)
        progress.append(view.progress)
        assert view.status not in {"failed", "cancelled"}, view
        return view.status == "completed"

    wait_until(completed)
    assert progress == sorted(progress)
    assert progress[-1] == 100
    assert any(0 < p < 100 for p in progress), progress
    done = client.videos.retrieve(job.id)
    assert done.completed_at is not None
    assert done.seconds == "1.125"  # 9 frames at the engine's 8 fps
    content = client.videos.download_content(job.id)
    assert content.response.headers["content-type"] == VIDEO_MEDIA_TYPE
    frames = split_pngs(content.content)
    assert len(frames) == 9
    assert frames == [encode_png(32, 24, seed=3 + i) for i in range(9)]
    assert job.id in [video.id for video in client.videos.list()]


def test_video_job_as_json(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        created = http.post(
            "/v1/videos", json={"model": "tiny", "prompt": "p", "frames": 5, "size": "16x16"}
        )
        assert created.status_code == 200
        job_id = created.json()["id"]
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "completed")
        content = http.get(f"/v1/videos/{job_id}/content")
        assert content.status_code == 200
        assert [png_size(f) for f in split_pngs(content.content)] == [(16, 16)] * 5
        wrong = http.post("/v1/videos", json={"model": "tiny", "prompt": "p", "frames": 4})
        assert wrong.status_code == 200  # accepted as a job; the engine refuses the request
        wrong_id = wrong.json()["id"]
        wait_until(lambda: http.get(f"/v1/videos/{wrong_id}").json()["status"] == "failed")
        failed = http.get(f"/v1/videos/{wrong_id}").json()
        assert failed["error"]["code"] == "invalid_request"
        assert "frames" in failed["error"]["message"]


@SORA
def test_cancel_and_delete_a_video_job(live: LiveServer) -> None:
    client = live.openai()
    job = client.videos.create(
        model="slow",
        prompt="long",
        extra_body={"frames": 5, "steps": 500},
    )
    wait_until(lambda: client.videos.retrieve(job.id).status == "in_progress")
    with httpx.Client(base_url=live.url) as http:
        cancel = http.post(f"/v1/videos/{job.id}/cancel")
        assert cancel.status_code == 200
        assert cancel.json()["id"] == job.id
        assert cancel.json()["status"] == "cancelled"  # it waits for the engine to stop
        assert cancel.json()["progress"] < 100
        view = client.videos.retrieve(job.id)
        assert view.status == "cancelled"
        assert view.error is not None
        assert view.error.code == "cancelled"
        assert view.completed_at is not None
        content = http.get(f"/v1/videos/{job.id}/content")
        assert content.status_code == 409
        assert error_of(content)["code"] == "job_not_completed"
        # The model is free again once the job has stopped.
        wait_until(lambda: models_by_id(live)["slow"]["active_requests"] == 0, timeout_s=2)
    deleted = client.videos.delete(job.id)
    assert deleted.id == job.id
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.retrieve(job.id)
    assert caught.value.code == "job_not_found"


def test_cancelling_a_finished_video_job_changes_nothing(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        job_id = http.post("/v1/videos", json={"model": "tiny", "prompt": "p"}).json()["id"]
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "completed")
        cancel = http.post(f"/v1/videos/{job_id}/cancel")
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "completed"
        assert http.get(f"/v1/videos/{job_id}/content").status_code == 200
        deleted = http.delete(f"/v1/videos/{job_id}")
        assert deleted.json() == {"id": job_id, "object": "video.deleted", "deleted": True}
        assert http.get(f"/v1/videos/{job_id}/content").status_code == 404


def test_a_video_job_on_a_model_that_fails_to_load_fails(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        job_id = http.post("/v1/videos", json={"model": "broken", "prompt": "p"}).json()["id"]
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "failed")
        job = http.get(f"/v1/videos/{job_id}").json()
        assert job["error"]["code"] == "load_failed"
        assert http.get(f"/v1/videos/{job_id}/content").status_code == 409


def test_a_long_poll_answers_once_the_job_has_ended(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job_id = http.post("/v1/videos", json={"model": "tiny", "prompt": "p"}).json()["id"]
        done = http.get(f"/v1/videos/{job_id}", params={"wait": 30})
        assert done.status_code == 200
        assert done.json()["status"] == "completed"  # one request, no polling
        assert http.get(f"/v1/videos/{job_id}/content").status_code == 200
        again = http.get(f"/v1/videos/{job_id}", params={"wait": 30})
        assert again.json() == done.json()  # an ended job answers at once


def test_a_long_poll_times_out_with_the_job_as_it_is_and_wakes_on_cancel(
    live: LiveServer,
) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        body = {"model": "slow", "prompt": "long", "frames": 5, "steps": 500}
        job_id = http.post("/v1/videos", json=body).json()["id"]
        running = http.get(f"/v1/videos/{job_id}", params={"wait": 0.2})
        assert running.status_code == 200
        assert running.json()["status"] in {"queued", "in_progress"}
        waiting = Background(lambda: http.get(f"/v1/videos/{job_id}", params={"wait": 60}))
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "in_progress")
        assert http.post(f"/v1/videos/{job_id}/cancel").json()["status"] == "cancelled"
        woken = waiting.join(timeout_s=10)
        assert isinstance(woken, httpx.Response)
        assert woken.json()["status"] == "cancelled"


def test_deleting_a_job_answers_its_long_polls(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        body = {"model": "slow", "prompt": "long", "frames": 5, "steps": 500}
        job_id = http.post("/v1/videos", json=body).json()["id"]
        waiting = Background(lambda: http.get(f"/v1/videos/{job_id}", params={"wait": 60}))
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "in_progress")
        assert http.delete(f"/v1/videos/{job_id}").status_code == 200
        woken = waiting.join(timeout_s=10)  # at once, not when its 60 s run out
        assert isinstance(woken, httpx.Response)
        assert woken.json()["status"] == "cancelled"  # deleting cancels the job first


def test_a_long_poll_checks_its_wait_and_the_job(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        too_long = http.get("/v1/videos/video_nope", params={"wait": 600})
        assert too_long.status_code == 422
        assert "wait" in error_of(too_long)["message"]
        unknown = http.get("/v1/videos/video_nope", params={"wait": 1})
        assert unknown.status_code == 404
        assert error_of(unknown)["code"] == "job_not_found"


def test_unknown_video_jobs_are_not_found(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        for method, path in [
            ("GET", "/v1/videos/video_nope"),
            ("GET", "/v1/videos/video_nope/content"),
            ("POST", "/v1/videos/video_nope/cancel"),
            ("DELETE", "/v1/videos/video_nope"),
        ]:
            response = http.request(method, path)
            assert response.status_code == 404, (method, path)
            assert error_of(response)["code"] == "job_not_found"


@SORA
def test_a_video_on_an_unknown_model_is_refused(live: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        live.openai().videos.create(model="nope", prompt="p")
    assert caught.value.code == "unknown_model"


def test_a_completed_job_whose_clip_expired_is_not_found(home: Path, live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        job_id = http.post("/v1/videos", json={"model": "tiny", "prompt": "p"}).json()["id"]
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "completed")
        clips = [path for path in (home / "files").iterdir() if path.is_file()]
        assert len(clips) == 1
        clips[0].unlink()  # what the store's expiry (or a delete racing this) does
        content = http.get(f"/v1/videos/{job_id}/content")
        assert content.status_code == 404
        error = error_of(content)
        assert error["code"] == "not_found"
        assert "expired" in error["message"]
        assert "POST /v1/videos" in error["hint"]
        assert http.get(f"/v1/videos/{job_id}").json()["status"] == "completed"


def test_a_clip_older_than_an_hour_is_not_served(home: Path, live: LiveServer) -> None:
    """Expired means gone at once, not only after the next clip is stored."""
    with httpx.Client(base_url=live.url) as http:
        job_id = http.post("/v1/videos", json={"model": "tiny", "prompt": "p"}).json()["id"]
        wait_until(lambda: http.get(f"/v1/videos/{job_id}").json()["status"] == "completed")
        (clip,) = [path for path in (home / "files").iterdir() if path.is_file()]
        two_hours_ago = time.time() - 7200
        os.utime(clip, (two_hours_ago, two_hours_ago))
        content = http.get(f"/v1/videos/{job_id}/content")
        assert content.status_code == 404
        assert "expired" in error_of(content)["message"]
        assert not clip.exists()


def test_a_clip_without_a_frame_rate_still_completes(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(motorpool_testengine.plugin, "DEFAULT_VIDEO_FPS", 0)  # fps=0 result
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job_id = http.post("/v1/videos", json={"model": "tiny", "prompt": "p"}).json()["id"]
        done = http.get(f"/v1/videos/{job_id}", params={"wait": 10}).json()
        assert done["status"] == "completed", done
        assert done["seconds"] == "auto"  # no frame rate, no length
        assert http.get(f"/v1/videos/{job_id}/content").status_code == 200


def test_a_video_job_that_crashes_fails_instead_of_running_forever(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_put(data: bytes, media_type: str) -> None:
        raise RuntimeError("a bug while storing the clip")

    # Not an OSError (a full disk is a typed storage_failed): an unexpected exception.
    monkeypatch.setattr(live.handler.blobs, "put", broken_put)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job_id = http.post("/v1/videos", json={"model": "tiny", "prompt": "p"}).json()["id"]
        ended = http.get(f"/v1/videos/{job_id}", params={"wait": 10}).json()
        assert ended["status"] == "failed", ended
        assert ended["error"]["code"] == "engine_error"
        assert "a bug while storing the clip" in ended["error"]["message"]
        assert http.get(f"/v1/videos/{job_id}/content").status_code == 409
        # Ended, so cancelling changes nothing and deleting forgets it.
        assert http.post(f"/v1/videos/{job_id}/cancel").json()["status"] == "failed"
        assert http.delete(f"/v1/videos/{job_id}").status_code == 200


# -- video jobs over a fake host: orderings a real engine cannot be made to hit ------------


class FakeGeneration:
    """What ``VideoJobs`` uses of a ``Generation``: a context manager, ``cancel``, events."""

    def __init__(self, events: Sequence[StreamEvent]) -> None:
        self.events = events
        self.cancelled = False
        self.iterating = threading.Event()

    def __enter__(self) -> FakeGeneration:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[StreamEvent]:
        self.iterating.set()
        if self.cancelled:  # like a real run: a cancelled request ends with this error
            yield ErrorEvent(error=Cancelled("cancelled").info())
            return
        yield from self.events


class FakeHost:
    """What ``VideoJobs`` calls on a ``Host``: ``stream`` and ``cancel``.

    With ``hold=True`` the job's thread cannot register its request until a ``cancel``
    arrives; that cancel then finds nothing registered and, before it answers, lets the
    job register and start: the interleaving that lost cancels.
    """

    def __init__(self, events: Sequence[StreamEvent], *, hold: bool = False) -> None:
        self.generation = FakeGeneration(events)
        self.registered = False
        self.may_register = threading.Event()
        if not hold:
            self.may_register.set()

    def stream(self, spec: ModelSpec, request: object, *, request_id: str) -> FakeGeneration:
        assert self.may_register.wait(10)
        self.registered = True
        return self.generation

    def cancel(self, request_id: str) -> bool:
        if self.registered:
            self.generation.cancel()
            return True
        self.may_register.set()
        assert self.generation.iterating.wait(10)
        return False


def clip(fps: int = 8) -> ResultEvent:
    """A finished clip, as an engine reports it."""
    result = VideoResult(
        video=b"clip", frames=5, width=16, height=16, fps=fps, timings=Timings(total_s=0)
    )
    return ResultEvent(result=result)


PICTURE = GeneratedImage(png=encode_png(1, 1, seed=0), width=1, height=1)


def start_fake_job(host: FakeHost, files: Path) -> tuple[VideoJobs, str]:
    """A ``VideoJobs`` over ``host`` and the id of the job it started."""
    jobs = VideoJobs(cast("Host", host), DirectoryBlobStore(files))
    body = oa.VideoCreateRequest(model="fake", prompt="p")
    view = jobs.start(ModelSpec(source="fake"), "fake", body, video_request(body, None))
    return jobs, view.id


def test_a_cancel_before_the_job_registers_is_not_lost(tmp_path: Path) -> None:
    host = FakeHost([clip()], hold=True)
    jobs, job_id = start_fake_job(host, tmp_path)
    view = jobs.cancel(job_id)
    assert view.status == "cancelled", view
    assert view.error is not None
    assert view.error.code == "cancelled"
    assert not list(tmp_path.iterdir())  # no clip was stored
    assert not jobs._cancelled  # the flag ended with the job


def test_a_cancel_after_the_job_ended_leaves_no_flag(tmp_path: Path) -> None:
    jobs, job_id = start_fake_job(FakeHost([clip()]), tmp_path)
    wait_until(lambda: jobs.get(job_id).status == "completed")
    assert jobs.cancel(job_id).status == "completed"
    assert not jobs._cancelled


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([], id="no-events"),
        pytest.param(
            [ResultEvent(result=ImageResult(images=(PICTURE,), timings=Timings(total_s=0)))],
            id="not-a-clip",
        ),
    ],
)
def test_a_stream_ending_without_a_clip_fails_the_job(
    tmp_path: Path, events: list[StreamEvent]
) -> None:
    jobs, job_id = start_fake_job(FakeHost(events), tmp_path)
    wait_until(lambda: jobs.get(job_id).status not in {"queued", "in_progress"})
    view = jobs.get(job_id)
    assert view.status == "failed"
    assert view.error is not None
    assert view.error.code == "engine_error"
    assert "without producing a clip" in view.error.message


# -- native API ----------------------------------------------------------------------------


def test_plugins_and_probe(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        plugins = {p["name"]: p for p in http.get("/api/plugins").json()["plugins"]}
        assert plugins["testengine"]["state"] == "loaded"
        assert "motorpool_stream" in plugins["testengine"]["hooks"]
        probe = http.get("/api/probe").json()
        assert probe["hardware"]["cpu_count"] >= 1
        reports = {p["plugin"]: p for p in probe["plugins"]}
        assert reports["testengine"]["report"]["ready"] is True
        assert "chat" in reports["testengine"]["report"]["capabilities"]
        deep = http.get("/api/probe", params={"deep": "true"})
        assert deep.status_code == 200
        version = http.get("/api/version").json()
        assert version["protocol_version"] >= 1
        aliases = http.get("/api/aliases").json()["aliases"]
        assert aliases["slow"]["options"]["token_delay_s"] == 0.05


def test_load_pin_and_unload(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        loaded = http.post("/api/models/load", json={"model": "tiny"})
        assert loaded.status_code == 200
        assert loaded.json()["id"] == "tiny"
        assert loaded.json()["status"] == "ready"
        assert "chat" in loaded.json()["capabilities"]
        again = http.post("/api/models/load", json={"model": "tiny"})
        assert again.json()["status"] == "ready"
        assert http.post("/api/models/pin", json={"model": "tiny"}).json()["pinned"] is True
        assert models_by_id(live)["tiny"]["pinned"] is True
        unpinned = http.post("/api/models/pin", json={"model": "tiny", "pinned": False})
        assert unpinned.json()["pinned"] is False
        unloaded = http.post("/api/models/unload", json={"model": "tiny"})
        assert unloaded.status_code == 200
        assert unloaded.json() == {"model": "tiny", "unloaded": True}
        wait_until(lambda: "tiny" not in models_by_id(live), timeout_s=2)
        for route in ("/api/models/unload", "/api/models/pin"):
            missing = http.post(route, json={"model": "tiny"})
            assert missing.status_code == 404, route
            assert error_of(missing)["code"] == "unknown_model"
        failed = http.post("/api/models/load", json={"model": "broken"})
        assert failed.status_code == 500
        assert error_of(failed)["code"] == "load_failed"
        neither = http.post("/api/models/load", json={})
        assert neither.status_code == 422


def test_load_a_spec(home: Path, live_factory: LiveFactory) -> None:
    spec = {
        "name": "custom",
        "plugin": "testengine",
        "source": str(home / "tiny.mptest.json"),
        "options": {"fail_after_tokens": 1},
    }
    refused = httpx.post(f"{live_factory().url}/api/models/load", json={"spec": spec})
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "source_not_allowed"
    live = live_factory(model_dirs=(home,))
    loaded = httpx.post(f"{live.url}/api/models/load", json={"spec": spec})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["id"] == "custom"
    request = {"model": "custom", "messages": HI, "max_tokens": 5, "stream": True}
    chunks = json_frames(httpx.post(f"{live.url}/v1/chat/completions", json=request).text)
    assert chunks[-1]["error"]["code"] == "engine_error"
    assert "custom" in [m.id for m in live.openai().models.list()]


def test_cancel_a_streamed_request_by_its_id(live: LiveServer) -> None:
    body = {"model": "slow", "messages": HI, "max_tokens": 1000}
    with open_stream(live, body, headers={"X-Request-ID": "cancel-me-1"}) as (response, frames):
        assert response.headers["x-request-id"] == "cancel-me-1"
        next_content(frames)
        cancelled = httpx.post(f"{live.url}/api/requests/cancel-me-1/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json() == {"request_id": "cancel-me-1", "cancelled": True}
        rest = list(frames)
    assert rest[-1] == "[DONE]"
    last = json.loads(rest[-2])
    assert last["error"]["code"] == "cancelled"
    assert len(rest) < 100  # it stopped long before its 1000 tokens
    wait_until(lambda: models_by_id(live)["slow"]["active_requests"] == 0, timeout_s=2)
    again = httpx.post(f"{live.url}/api/requests/cancel-me-1/cancel")
    assert again.json()["cancelled"] is False


def test_cancel_a_non_streamed_request_by_its_id(live: LiveServer) -> None:
    client = live.openai()
    client.chat.completions.create(model="slow", messages=HI, max_tokens=1)  # loaded

    def running() -> bool:
        return models_by_id(live)["slow"]["active_requests"] == 1

    with httpx.Client(base_url=live.url, timeout=10) as http:
        call = Background(
            lambda: client.chat.completions.create(
                model="slow",
                messages=HI,
                max_tokens=1000,
                extra_headers={"X-Request-ID": "cancel-me-2"},
            )
        )
        wait_until(running, timeout_s=2)
        assert http.post("/api/requests/cancel-me-2/cancel").json()["cancelled"] is True
        failure = call.join(timeout_s=2)
    # A whole response has nothing to show for a cancelled run: a typed 499.
    assert isinstance(failure, openai.APIStatusError), failure
    assert failure.status_code == 499
    assert failure.code == "cancelled"
    wait_until(lambda: models_by_id(live)["slow"]["active_requests"] == 0, timeout_s=2)
