"""Discovery with 50 installed dummy plugins: stevedore's entry point cache cold and warm.

The baseline is what discovery cannot go below: ``importlib.metadata.entry_points`` for
the group, then importing each plugin. Each run is a fresh interpreter that has already
imported ``motorpool._discovery``; only the discovery call itself is timed.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from _common import ENGINES_GROUP, Row, clean_env, make_dummy_plugins, repeats, run_python_json

DUMMY_PLUGINS = 50

_DISCOVER = """
import json, time
from motorpool._discovery import discover
start = time.perf_counter()
found = discover(allow=None, strict=False)
seconds = time.perf_counter() - start
states = {name: record.state.value for name, record in found.records.items()}
print(json.dumps({"seconds": seconds, "states": states}))
"""

_BASELINE = f"""
import importlib.metadata, json, time
import motorpool._discovery  # the same imports as the measured run, untimed
start = time.perf_counter()
entry_points = importlib.metadata.entry_points(group={ENGINES_GROUP!r})
plugins = {{ep.name: ep.load() for ep in entry_points}}
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "states": dict.fromkeys(plugins, "loaded")}}))
"""


def run() -> list[Row]:
    """Time cold-cache, warm-cache and baseline discovery, interleaved run by run."""
    with tempfile.TemporaryDirectory(prefix="motorpool-bench-") as tmp:
        root = Path(tmp)
        names = make_dummy_plugins(root / "site", DUMMY_PLUGINS)

        def env(cache: str) -> dict[str, str]:
            return clean_env(
                PYTHONPATH=str(root / "site"),
                XDG_CACHE_HOME=str(root / cache),
                MOTORPOOL_HOME=str(root / "home"),
            )

        _timed(_BASELINE, env("unused"), names)  # writes the dummies' bytecode, untimed
        _timed(_DISCOVER, env("warm"), names)  # fills the cache the warm runs read
        baseline: list[float] = []
        cold: list[float] = []
        warm: list[float] = []
        for index in range(repeats()):
            baseline.append(_timed(_BASELINE, env("unused"), names))
            cold.append(_timed(_DISCOVER, env(f"cold-{index}"), names))
            warm.append(_timed(_DISCOVER, env("warm"), names))

    floor = statistics.median(baseline)
    label = "entry_points() + import"
    plus = f"{DUMMY_PLUGINS} dummy plugins"
    return [
        Row(f"discover(), cold cache, {plus}", statistics.median(cold), "ms", floor, label),
        Row(f"discover(), warm cache, {plus}", statistics.median(warm), "ms", floor, label),
    ]


def _timed(code: str, env: Mapping[str, str], names: list[str]) -> float:
    """Milliseconds one discovery took in a fresh interpreter; checks every dummy loaded."""
    result = run_python_json(code, env)
    states = cast("dict[str, str]", result["states"])
    seconds = result["seconds"]
    assert isinstance(states, dict)
    assert isinstance(seconds, float)
    not_loaded = {name: states.get(name) for name in names if states.get(name) != "loaded"}
    assert not not_loaded, f"dummy plugins not loaded: {not_loaded}"
    return seconds * 1000
