"""The llama.cpp plugin behind the real server, spoken to with the official OpenAI SDK."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from motorpool._settings import Settings
from motorpool.server import create_app

from tests.fake_hub import FakeHub, client_env, serve
from tests.server.live import LiveServer, start_live

MODELS = """
[models.tiny]
plugin = "llama-cpp"
source = "{path}"
options = {{ context_length = 512 }}
"""


@pytest.fixture
def server(tmp_path: Path, tiny_gguf: Path) -> Iterator[LiveServer]:
    (tmp_path / "models.toml").write_text(MODELS.format(path=tiny_gguf), encoding="utf-8")
    settings = Settings(
        home=tmp_path, models_file=tmp_path / "models.toml", plugins="llama-cpp", keep_alive_s=-1
    )
    live, thread = start_live(create_app(settings))
    yield live
    live.server.should_exit = True
    thread.join(15)


def test_openai_sdk_streams_a_chat_completion(server: LiveServer) -> None:
    client = server.openai()
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=12,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias={"0": -100, "1": -100, "2": -100},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = chunks[-1].usage
    assert finishes == ["length"]
    assert usage is not None
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens > 5
    # The same request without streaming gives the same text (same seed).
    whole = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=12,
        seed=4,
        logit_bias={"0": -100, "1": -100, "2": -100},
    )
    assert whole.choices[0].message.content == text


def test_openai_sdk_sees_clear_errors(server: LiveServer) -> None:
    client = server.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="word " * 2000, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.UnprocessableEntityError, match="typical_p"):
        client.completions.create(
            model="tiny", prompt="Hi", max_tokens=4, extra_body={"typical_p": 0.5}
        )
    # The engine's own checks run once the stream has started: an SSE error event, which
    # the SDK raises while iterating.
    with pytest.raises(openai.APIError, match="outside the vocabulary"):
        list(
            client.completions.create(
                model="tiny", prompt="Hi", max_tokens=4, stream=True, logit_bias={"99999": 1}
            )
        )
    # The model still answers.
    answer = client.completions.create(model="tiny", prompt="Hi", max_tokens=3)
    assert answer.choices[0].finish_reason in {"stop", "length"}


def test_guards_travel_in_the_request_body(server: LiveServer) -> None:
    answer = server.openai().completions.create(
        model="tiny",
        prompt="Hi",
        max_tokens=200,
        seed=1,
        logit_bias={"0": -100, "1": -100, "2": -100},
        extra_body={"guards": {"max_chars": 10}},
    )
    assert answer.choices[0].finish_reason == "runaway"


LOAD_FROM_HUB = """
import json, sys
from motorpool import Host, ModelSpec, CompletionRequest, Settings
spec = ModelSpec.model_validate_json(sys.argv[1])
with Host(Settings(plugins="llama-cpp")) as host:
    result = host.generate(spec, CompletionRequest(prompt="Hi", max_tokens=3))
    info = host.models()[0]
print(json.dumps({"file": info.details["file"], "tokens": result.usage.completion_tokens}))
"""


@pytest.mark.parametrize("plugin", ["llama-cpp", None])
def test_load_from_a_hub_repo_with_a_file_pattern(
    tmp_path: Path, tiny_gguf: Path, plugin: str | None
) -> None:
    model = tiny_gguf.read_bytes()
    hub = FakeHub(
        {
            "org/Tiny-GGUF": {
                "tiny-f16.gguf": model,
                "tiny-q8_0.gguf": model,
                "README.md": b"# tiny",
            }
        }
    )
    spec = {"plugin": plugin, "source": "org/Tiny-GGUF", "files": ["*q8_0.gguf"]}
    with serve(hub) as endpoint:
        env = client_env(endpoint, tmp_path)
        done = subprocess.run(
            [sys.executable, "-c", LOAD_FROM_HUB, json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"file": "tiny-q8_0.gguf", "tokens": 3}
    assert not any("tiny-f16.gguf" in line for line in hub.requests if "GET" in line)
