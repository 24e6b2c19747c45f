"""The ``motorpool`` command, run as a real process through its console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from motorpool_testengine._png import png_size
from motorpool_testengine.plugin import write_model

from tests.support import motorpool


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "tiny.mptest.json")


def test_plugins_table_and_json(tmp_path: Path) -> None:
    table = motorpool("plugins", home=tmp_path).stdout
    assert table.splitlines()[0].split() == ["NAME", "VERSION", "STATE", "CAPABILITIES", "REASON"]
    assert "testengine" in table
    assert "loaded" in table
    records = json.loads(motorpool("plugins", "--json", home=tmp_path).stdout)
    engine = next(r for r in records if r["name"] == "testengine")
    assert engine["state"] == "loaded"
    assert engine["distribution"] == "motorpool-testengine"
    assert "motorpool_load" in engine["hooks"]


def test_allow_list_disables_without_importing(tmp_path: Path) -> None:
    records = json.loads(
        motorpool("plugins", "--json", home=tmp_path, env={"MOTORPOOL_PLUGINS": ""}).stdout
    )
    assert {r["state"] for r in records} == {"disabled"}
    assert all("MOTORPOOL_PLUGINS" in r["hint"] for r in records)


def test_probe_reports_hardware_and_plugins(tmp_path: Path) -> None:
    report = json.loads(motorpool("probe", "--json", home=tmp_path).stdout)
    assert report["hardware"]["cpu_count"] >= 1
    assert report["hardware"]["memory_total_bytes"] > 0
    engine = next(p for p in report["plugins"] if p["plugin"] == "testengine")
    assert engine["report"]["ready"] is True
    assert "chat" in engine["report"]["capabilities"]
    assert "hardware" in motorpool("probe", home=tmp_path).stdout


def test_run_streams_text(tmp_path: Path, model: Path) -> None:
    result = motorpool(
        "run", str(model), "Hello there", "--max-tokens", "5", "--seed", "1", home=tmp_path
    )
    words = result.stdout.split()
    assert 1 <= len(words) <= 5
    assert all(word.startswith("w") for word in words)
    assert "tokens" in result.stderr
    as_json = json.loads(
        motorpool(
            "run",
            str(model),
            "Hello there",
            "--max-tokens",
            "5",
            "--seed",
            "1",
            "--json",
            home=tmp_path,
        ).stdout
    )
    assert as_json["text"].split() == words  # same seed, same words
    assert as_json["usage"]["completion_tokens"] == len(words)


def test_run_writes_an_image(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "cat.png"
    result = motorpool(
        "run",
        f"testengine-generate-only:{model}",
        "a cat",
        "--width",
        "24",
        "--height",
        "16",
        "--steps",
        "2",
        "-o",
        str(out),
        home=tmp_path,
    )
    assert f"wrote {out}" in result.stdout
    assert png_size(out.read_bytes()) == (24, 16)
    assert not list(tmp_path.glob("*.partial"))


def test_run_reports_typed_errors(tmp_path: Path, model: Path) -> None:
    unknown = motorpool("run", "no-such-model", "hi", home=tmp_path, check=False)
    assert unknown.returncode == 1
    assert "error: unknown model 'no-such-model'" in unknown.stderr
    assert "hint:" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    bad_option = motorpool(
        "run", str(model), "hi", "--option", "token_delay_s=slow", home=tmp_path, check=False
    )
    assert bad_option.returncode == 1
    assert "token_delay_s" in bad_option.stderr

    bad_size = motorpool(
        "run", f"testengine-generate-only:{model}", "x", "--width", "20", home=tmp_path, check=False
    )
    assert bad_size.returncode == 1
    assert "multiples of 8" in bad_size.stderr

    bad_settings = motorpool(
        "plugins", home=tmp_path, env={"MOTORPOOL_KEEP_ALIVE_S": "soon"}, check=False
    )
    assert bad_settings.returncode == 1
    assert "invalid settings" in bad_settings.stderr
    assert "Traceback" not in bad_settings.stderr


def test_ps_loads_preloaded_models_from_the_models_file(tmp_path: Path, model: Path) -> None:
    (tmp_path / "models.toml").write_text(
        f"""
[models.tiny]
plugin = "testengine"
source = "{model}"
preload = true

[models.tiny.options]
max_concurrency = 2

[models.later]
source = "{model}"
""",
        encoding="utf-8",
    )
    models = json.loads(motorpool("ps", "--json", home=tmp_path).stdout)
    assert [(m["id"], m["status"], m["max_concurrency"]) for m in models] == [("tiny", "ready", 2)]
    assert "tiny" in motorpool("ps", home=tmp_path).stdout
    text = motorpool("run", "later", "hi", "--max-tokens", "2", home=tmp_path).stdout
    assert text.strip()


def test_check_smoke_runs_every_plugin(tmp_path: Path) -> None:
    result = motorpool("check", home=tmp_path)
    assert "pass" in result.stdout
    results = json.loads(motorpool("check", "--json", home=tmp_path).stdout)
    by_plugin = {r["plugin"]: r for r in results}
    assert by_plugin["testengine"]["ok"] is True
    assert by_plugin["testengine"]["stage"] == "done"
    assert set(by_plugin["testengine"]["seconds"]) == {"tiny_model", "load", "generate", "unload"}
    assert by_plugin["testengine-generate-only"]["skipped"] is True


def test_help_is_fast_to_reach_and_lists_commands(tmp_path: Path) -> None:
    commands = motorpool("--help", home=tmp_path).stdout
    for name in ("plugins", "probe", "run", "ps", "check"):
        assert name in commands


def test_models_lists_aliases_and_relative_sources_follow_the_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    write_model(home / "weights" / "tiny.mptest.json")
    (home / "models.toml").write_text(
        '[models.tiny]\nsource = "./weights/tiny.mptest.json"\npreload = true\n'
        "[models.tiny.options]\nmax_concurrency = 2\n"
        '[models.hub]\nplugin = "testengine"\nsource = "org/model"\npinned = true\n',
        encoding="utf-8",
    )
    table = motorpool("models", home=home).stdout.splitlines()
    assert table[0].split() == ["ALIAS", "PLUGIN", "SOURCE", "OPTIONS", "FLAGS"]
    assert table[2].split() == ["hub", "testengine", "org/model", "pinned"]
    assert table[1].split() == [
        "tiny",
        "(auto)",
        str(home / "weights" / "tiny.mptest.json"),
        "max_concurrency=2",
        "preload",
    ]
    specs = json.loads(motorpool("models", "--json", home=home).stdout)
    assert [s["name"] for s in specs] == ["tiny", "hub"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = motorpool("run", "tiny", "hi", "--max-tokens", "2", home=home, cwd=elsewhere)
    assert ran.stdout.strip()  # the relative source was found from another folder


def test_models_without_a_models_file(tmp_path: Path) -> None:
    assert "no models defined in" in motorpool("models", home=tmp_path).stdout
