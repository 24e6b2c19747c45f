"""The MLX plugin behind the real server: the official openai SDK over a loopback socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from motorpool import Settings
from motorpool.server import create_app
from tokenizers import Tokenizer

from tests.server.live import LiveServer, start_live

FORCE = 100


@pytest.fixture(scope="module")
def live(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server whose models file names the tiny model ``tiny`` (plugin mlx)."""
    home = tmp_path_factory.mktemp("server-home")
    models = home / "models.toml"
    models.write_text(f'[models.tiny]\nplugin = "mlx"\nsource = "{tiny_folder}"\n')
    settings = Settings(plugins="mlx", home=home, models_file=models, keep_alive_s=-1)
    server, thread = start_live(create_app(settings))
    yield server
    server.server.should_exit = True
    thread.join(15)


def test_openai_sdk_streams_a_chat(live: LiveServer, tokenizer: Tokenizer) -> None:
    sea = tokenizer.token_to_id("Ġsea")
    assert isinstance(sea, int)
    client = live.openai()
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=6,
        temperature=0,
        logit_bias={str(sea): FORCE},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "sea sea sea sea sea sea"
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert reasons == ["length"]
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens > 0


def test_openai_sdk_completion_matches_the_stream(live: LiveServer) -> None:
    client = live.openai()
    whole = client.completions.create(
        model="tiny",
        prompt="The weather is",
        max_tokens=8,
        temperature=0,
        extra_body={"guards": {"max_repeats": None}},
    )
    pieces = client.completions.create(
        model="tiny",
        prompt="The weather is",
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"guards": {"max_repeats": None}},
    )
    assert (
        "".join(chunk.choices[0].text for chunk in pieces if chunk.choices) == whole.choices[0].text
    )
    assert whole.usage is not None
    assert whole.usage.completion_tokens <= 8


def test_bad_request_is_a_4xx_not_a_crash(live: LiveServer) -> None:
    client = live.openai()
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt="hi " * 1100, max_tokens=4)
    assert "context" in str(raised.value)
    response = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "logit_bias": {"99999": 1},
        },
    )
    assert response.status_code == 422
    assert "vocabulary" in response.json()["error"]["message"]
