"""Model sources: local paths, model directories, the models file, Hugging Face repos offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from motorpool import Host, Settings
from motorpool.errors import InvalidRequest, SourceNotAllowed
from motorpool.types import ModelSpec, TextResult
from motorpool_testengine.plugin import write_model

from tests.support import chat, motorpool

REVISION = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(hf_home: Path, repo_id: str) -> Path:
    """The layout huggingface_hub itself writes: refs/main -> snapshots/<commit>/files."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    write_model(snapshot / "model.mptest.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def test_hub_repo_resolves_from_the_cache_offline(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    snapshot = fake_hub_cache(hf_home, "tiny-org/tiny-model")
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    result = motorpool(
        "run",
        "testengine:tiny-org/tiny-model",
        "hi",
        "--max-tokens",
        "3",
        "--json",
        home=tmp_path,
        env=env,
    )
    assert json.loads(result.stdout)["usage"]["completion_tokens"] == 3
    assert snapshot.is_dir()


def test_hub_repo_missing_offline_is_a_clear_error(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    result = motorpool(
        "run", "testengine:hf:nobody/nothing", "hi", home=tmp_path, env=env, check=False
    )
    assert result.returncode == 1
    assert "not in the local cache" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_dirs_confine_local_paths(tmp_path: Path) -> None:
    inside = tmp_path / "models"
    inside.mkdir()
    allowed = write_model(inside / "ok.mptest.json")
    outside = write_model(tmp_path / "elsewhere.mptest.json")
    settings = Settings(home=tmp_path, plugins="testengine", model_dirs=(inside,))
    with Host(settings) as host:
        assert isinstance(host.generate(str(allowed), chat()), TextResult)
        with pytest.raises(SourceNotAllowed, match="outside the model directories") as info:
            host.load(str(outside))
        assert str(inside) in (info.value.hint or "")


def test_model_dirs_from_the_environment(tmp_path: Path) -> None:
    code = "from motorpool import Settings; print([str(p) for p in Settings().model_dirs])"
    env = {
        **os.environ,
        "MOTORPOOL_MODEL_DIRS": f"/a{os.pathsep}/b",
        "MOTORPOOL_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['/a', '/b']"


def test_models_file_aliases_and_config_file(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.mptest.json")
    (tmp_path / "models.toml").write_text(
        f'[models.fast]\nsource = "{model}"\nkeep_alive_s = -1\n'
        f"[models.fast.options]\nmax_concurrency = 3\n",
        encoding="utf-8",
    )
    (tmp_path / "config.toml").write_text('plugins = "testengine"\nmax_queue = 7\n')
    os.environ["MOTORPOOL_HOME"] = str(tmp_path)
    try:
        settings = Settings()
    finally:
        del os.environ["MOTORPOOL_HOME"]
    assert settings.max_queue == 7
    with Host(settings) as host:
        assert host.aliases["fast"] == ModelSpec(
            name="fast", source=str(model), keep_alive_s=-1, options={"max_concurrency": 3}
        )
        info = host.load("fast")
        assert (info.id, info.plugin, info.max_concurrency) == ("fast", "testengine", 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[models.x\n", "not valid TOML"),
        ("models = 3\n", "must be a table"),
        ('[models.x]\nsource = "a"\nunknown = 1\n', "model 'x' is invalid"),
    ],
)
def test_bad_models_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "models.toml").write_text(content)
    with pytest.raises(InvalidRequest, match=message):
        Host(Settings(home=tmp_path, plugins=""))
