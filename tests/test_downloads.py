"""Hub downloads through the real huggingface_hub client, against a fake hub on loopback.

Each test runs the host in a fresh process: huggingface_hub reads ``HF_ENDPOINT`` and
``HF_HOME`` once, at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from motorpool_testengine.plugin import write_model

from tests.fake_hub import FakeHub, client_env, serve

LOAD = """
import json, sys, threading
from motorpool import Host, ModelSpec, Settings
from motorpool.errors import MotorpoolError

spec = ModelSpec.model_validate_json(sys.argv[1])
events, outcome = [], {}
with Host(Settings(plugins="testengine")) as host:
    first_progress = threading.Event()

    def record(event):
        events.append(event.model_dump())
        first_progress.set()

    def load():
        try:
            outcome["status"] = host.load(spec, on_progress=record).status
        except MotorpoolError as exc:
            outcome["error"] = exc.code
            outcome["message"] = str(exc)

    loader = threading.Thread(target=load)
    loader.start()
    if sys.argv[2] == "cancel":
        first_progress.wait(30)
        host.cancel_load(f"testengine:{spec.source}")
    loader.join(60)
    outcome["models"] = [m.id for m in host.models()]
print(json.dumps({**outcome, "events": events}))
"""


@pytest.fixture
def model_bytes(tmp_path: Path) -> bytes:
    return write_model(tmp_path / "model.mptest.json", words=2000).read_bytes()


def load_from(
    hub: FakeHub, tmp_path: Path, source: str, *, cancel: bool = False, files: tuple[str, ...] = ()
) -> dict[str, Any]:
    spec = json.dumps({"plugin": "testengine", "source": source, "files": files})
    with serve(hub) as endpoint:
        env = client_env(endpoint, tmp_path)
        done = subprocess.run(
            [sys.executable, "-c", LOAD, spec, "cancel" if cancel else "wait"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
    return json.loads(done.stdout)


def test_download_reports_progress_and_loads(tmp_path: Path, model_bytes: bytes) -> None:
    hub = FakeHub({"org/tiny": {"model.mptest.json": model_bytes, "README.md": b"# tiny"}})
    outcome = load_from(hub, tmp_path, "org/tiny")
    assert outcome["status"] == "ready"
    assert outcome["models"] == ["testengine:org/tiny"]
    by_stage: dict[str, list[tuple[int, int]]] = {}
    for event in outcome["events"]:
        by_stage.setdefault(event["stage"], []).append((event["step"], event["total"]))
    assert by_stage["download"][-1] == (len(model_bytes) + len(b"# tiny"),) * 2
    assert by_stage["download_files"][-1] == (2, 2)
    steps = [step for step, _ in by_stage["download"]]
    assert steps == sorted(steps)
    assert list(by_stage)[-1] == "load"  # downloads finish before the engine loads


def test_files_narrow_the_download(tmp_path: Path, model_bytes: bytes) -> None:
    hub = FakeHub({"org/tiny": {"model.mptest.json": model_bytes, "big.bin": b"x" * 10_000}})
    outcome = load_from(hub, tmp_path, "hf:org/tiny", files=("*.json",))
    assert outcome["status"] == "ready"
    fetched = [r for r in hub.requests if "/resolve/" in r and r.startswith('"GET')]
    assert len(fetched) == 1
    assert "model.mptest.json" in fetched[0]


def test_cancel_a_download(tmp_path: Path, model_bytes: bytes) -> None:
    hub = FakeHub({"org/slow": {"model.mptest.json": model_bytes}}, chunk_delay_s=0.05)
    outcome = load_from(hub, tmp_path, "org/slow", cancel=True)
    assert outcome["error"] == "cancelled"
    assert outcome["models"] == []  # nothing half-loaded is left behind
    assert outcome["events"]


def test_unknown_repo_is_not_found(tmp_path: Path) -> None:
    outcome = load_from(FakeHub({}), tmp_path, "org/missing")
    assert outcome["error"] == "source_not_found"
    assert "org/missing" in outcome["message"]
    assert outcome["models"] == []
