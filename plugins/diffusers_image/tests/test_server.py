"""The plugin behind the real server: the official openai SDK over a loopback socket."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from motorpool.server import create_app
from PIL import Image

from tests.server.live import LiveServer, start_live
from tests.support import plugin_settings

from .conftest import PLUGIN


@pytest.fixture(scope="module")
def live(sd_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server whose models file names the tiny Stable Diffusion ``tiny-sd``."""
    home = tmp_path_factory.mktemp("server-home")
    (home / "models.toml").write_text(
        f'[models.tiny-sd]\nplugin = "diffusers-image"\nsource = "{sd_folder}"\n',
        encoding="utf-8",
    )
    server, thread = start_live(create_app(plugin_settings(PLUGIN, home)))
    yield server
    server.server.should_exit = True
    thread.join(15)


def test_openai_sdk_generates_a_png_of_the_size_asked(live: LiveServer) -> None:
    client = live.openai()
    response = client.images.generate(
        model="tiny-sd",
        prompt="a red square on the sea",
        size="64x48",
        n=2,
        response_format="b64_json",
        extra_body={"steps": 2, "seed": 9},
    )
    assert response.data is not None
    assert len(response.data) == 2
    for item, seed in zip(response.data, (9, 10), strict=True):
        assert item.b64_json is not None
        png = base64.b64decode(item.b64_json)
        with Image.open(io.BytesIO(png)) as image:
            image.verify()  # a whole, valid PNG: every chunk's checksum
        with Image.open(io.BytesIO(png)) as image:
            assert (image.format, image.size) == ("PNG", (64, 48))
            assert image.info["seed"] == str(seed)
            assert image.info["prompt"] == "a red square on the sea"


def test_bad_requests_are_4xx_with_the_reason(live: LiveServer) -> None:
    client = live.openai()
    with pytest.raises(openai.UnprocessableEntityError, match="not a multiple of 8"):
        client.images.generate(model="tiny-sd", prompt="a cat", size="60x64")
    for field, value in (("steps", 0), ("steps", 1000), ("guidance", "NaN")):
        response = httpx.post(
            f"{live.url}/v1/images/generations",
            json={"model": "tiny-sd", "prompt": "a cat", field: value},
        )
        assert response.status_code == 422, response.text
        assert field in response.text
