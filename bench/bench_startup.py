"""Start-up: ``import motorpool``, ``motorpool plugins`` and the idle host's memory.

Every time is the median of several fresh interpreters, compared with ``python -c pass``
run in the same environment: the floor no Python program starts below.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from _common import (
    PYTHON,
    Row,
    clean_env,
    make_dummy_plugins,
    median_wall_time,
    repeats,
    run_python_json,
    wall_time,
)

DUMMY_PLUGINS = 50
IMPORT_TARGET_MS = 50.0
PLUGINS_TARGET_MS = 300.0
RSS_TARGET_MB = 80.0
MB = 2**20

_MOTORPOOL_LINE = re.compile(r"^import time:\s*\d+\s*\|\s*(\d+)\s*\|\s*motorpool\s*$", re.MULTILINE)

_RSS_FLOOR = """
import json, psutil
print(json.dumps({"rss": psutil.Process().memory_info().rss}))
"""

_RSS_HOST = """
import json, psutil, motorpool
host = motorpool.Host()
states = [p.state.value for p in host.plugins]
print(json.dumps({"rss": psutil.Process().memory_info().rss, "plugins": states}))
"""


def run() -> list[Row]:
    """Measure start-up with the workspace's plugins, and with 50 dummy plugins more."""
    with tempfile.TemporaryDirectory(prefix="motorpool-bench-") as tmp:
        root = Path(tmp)
        dummies = root / "site"
        make_dummy_plugins(dummies, DUMMY_PLUGINS)
        # An own cache and home: the user's entry point cache and config stay untouched.
        workspace = clean_env(
            XDG_CACHE_HOME=str(root / "cache-workspace"), MOTORPOOL_HOME=str(root / "home")
        )
        crowded = clean_env(
            XDG_CACHE_HOME=str(root / "cache-crowded"),
            MOTORPOOL_HOME=str(root / "home"),
            PYTHONPATH=str(dummies),
        )
        floor = median_wall_time([PYTHON, "-c", "pass"], crowded) * 1000
        floor_ws = median_wall_time([PYTHON, "-c", "pass"], workspace) * 1000
        plus = f"+{DUMMY_PLUGINS} dummy plugins"
        return [
            _import_time(crowded, floor),
            Row(
                "python -c 'import motorpool', wall",
                median_wall_time([PYTHON, "-c", "import motorpool"], crowded) * 1000,
                "ms",
                floor,
                "python -c pass",
            ),
            _plugins_command("motorpool plugins", workspace, floor_ws, PLUGINS_TARGET_MS),
            _plugins_command(f"motorpool plugins, {plus}", crowded, floor, None),
            _idle_rss("idle Host() RSS", workspace, RSS_TARGET_MB),
            _idle_rss(f"idle Host() RSS, {plus}", crowded, None),
        ]


def _import_time(env: Mapping[str, str], floor_ms: float) -> Row:
    """The cumulative time ``-X importtime`` reports for ``motorpool`` (median)."""
    samples: list[float] = []
    for _ in range(repeats() + 1):
        done = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", "import motorpool"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        found = _MOTORPOOL_LINE.search(done.stderr)
        if found is None:
            raise RuntimeError(f"no 'motorpool' line in -X importtime output:\n{done.stderr}")
        samples.append(int(found.group(1)) / 1000)
    return Row(
        "import motorpool (-X importtime)",
        statistics.median(samples[1:]),  # the first run warms bytecode and page cache
        "ms",
        floor_ms,
        "python -c pass",
        IMPORT_TARGET_MS,
        note="cumulative us of the motorpool line",
    )


def _plugins_command(
    name: str, env: Mapping[str, str], floor_ms: float, target: float | None
) -> Row:
    """Wall time of ``motorpool plugins`` on a warm entry point cache; skipped if no CLI."""
    script = shutil.which("motorpool", path=str(Path(PYTHON).parent))
    command = [script, "plugins"] if script else [PYTHON, "-m", "motorpool", "plugins"]
    try:
        wall_time(command, env)  # also fills the entry point cache: a warm start is measured
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {exc.returncode}"
        missing = "No module named 'motorpool.cli'" in stderr or "motorpool.__main__" in stderr
        return Row(
            name,
            None,
            "ms",
            floor_ms,
            "python -c pass",
            target,
            note=("CLI not available: " if missing else "failed: ") + last,
            error=not missing,
        )
    value = median_wall_time(command, env) * 1000
    return Row(name, value, "ms", floor_ms, "python -c pass", target, note="warm cache")


def _idle_rss(name: str, env: Mapping[str, str], target: float | None) -> Row:
    """Resident memory of a process holding a ``Host()`` with no model loaded (median)."""
    run_python_json(_RSS_HOST, env)  # untimed: compiles bytecode, fills the cache
    floor: list[float] = []
    host: list[float] = []
    for _ in range(max(3, repeats() // 2)):
        floor.append(_rss_mb(run_python_json(_RSS_FLOOR, env)))
        result = run_python_json(_RSS_HOST, env)
        states = result["plugins"]
        assert isinstance(states, list)
        assert states, "the host found no plugin at all"
        host.append(_rss_mb(result))
    return Row(
        name,
        statistics.median(host),
        "MB",
        statistics.median(floor),
        "python + psutil",
        target,
    )


def _rss_mb(result: Mapping[str, object]) -> float:
    rss = result["rss"]
    assert isinstance(rss, int)
    return rss / MB
