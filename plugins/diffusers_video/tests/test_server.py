"""The plugin behind the real server: video jobs over a loopback socket, as clients poll them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from motorpool.server import create_app

from tests.server.live import LiveServer, start_live
from tests.support import plugin_settings

from .conftest import PLUGIN, decode_mp4

FINISHED = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def live(
    wan_folder: Path, ltx_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server whose models file names the tiny Wan ``tiny-wan`` and LTX ``tiny-ltx``."""
    home = tmp_path_factory.mktemp("server-home")
    (home / "models.toml").write_text(
        f'[models.tiny-wan]\nplugin = "diffusers-video"\nsource = "{wan_folder}"\n'
        f'[models.tiny-ltx]\nplugin = "diffusers-video"\nsource = "{ltx_folder}"\n',
        encoding="utf-8",
    )
    server, thread = start_live(create_app(plugin_settings(PLUGIN, home)))
    yield server
    server.server.should_exit = True
    thread.join(15)


def poll(client: httpx.Client, job_id: str, timeout_s: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, object] = client.get(f"/v1/videos/{job_id}").json()
        if job["status"] in FINISHED or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


@pytest.mark.parametrize("model", ["tiny-wan", "tiny-ltx"])
def test_a_job_ends_with_a_playable_mp4(live: LiveServer, tmp_path: Path, model: str) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        created = client.post(
            "/v1/videos",
            json={"model": model, "prompt": "a red cat", "size": "64x32", "frames": 9,
                  "fps": 10, "steps": 2, "seed": 4},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        job = poll(client, created.json()["id"])
        assert job["status"] == "completed", job
        assert (job["progress"], job["size"], job["seconds"]) == (100, "64x32", "0.9")
        content = client.get(f"/v1/videos/{job['id']}/content")
    assert content.status_code == 200
    assert content.headers["content-type"] == "video/mp4"
    decoded = decode_mp4(content.content, tmp_path)
    assert decoded.frames.shape == (9, 32, 64, 3)
    assert decoded.fps == 10


def test_bad_frame_counts_fail_the_job_with_the_reason(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        created = client.post(
            "/v1/videos",
            json={"model": "tiny-wan", "prompt": "a cat", "size": "32x32", "frames": 6},
        )
        job = poll(client, created.json()["id"])
        assert job["status"] == "failed"
        error = job["error"]
        assert isinstance(error, dict)
        assert error["code"] == "invalid_request"
        assert "4k+1" in error["message"]
        content = client.get(f"/v1/videos/{job['id']}/content")
    assert content.status_code == 409  # no clip is presented for a failed job


def test_cancel_a_running_job(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        created = client.post(
            "/v1/videos",
            json={"model": "tiny-wan", "prompt": "a cat", "size": "32x32", "frames": 5,
                  "steps": 500, "seed": 1},
        )  # fmt: skip
        job_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/videos/{job_id}").json()["progress"] < 1:  # 5 steps of 500
            assert time.monotonic() < deadline
            time.sleep(0.01)
        cancelled = client.post(f"/v1/videos/{job_id}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert 0 < cancelled["progress"] < 100
        assert client.get(f"/v1/videos/{job_id}/content").status_code == 409
