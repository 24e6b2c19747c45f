"""Shared pieces of the benchmarks: the result row, subprocess timing, dummy plugins."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PYTHON = sys.executable
"""The interpreter of the environment under test (``uv run`` gives the workspace venv)."""
ENGINES_GROUP = "motorpool.engines"
DEFAULT_REPEATS = 7
SERVE_TIMEOUT_S = 600  # a large model on a GPU takes minutes to load


def repeats() -> int:
    """How many times each measurement runs; the median is reported (``BENCH_RUNS``)."""
    return max(1, int(os.environ.get("BENCH_RUNS", DEFAULT_REPEATS)))


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement, the baseline it is compared with and the target it must meet."""

    name: str
    value: float | None
    """``None`` when the benchmark did not run (``note`` says why)."""
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: float | None = None
    """An upper bound in ``unit``; ``None`` for an informational row."""
    min_ratio: float | None = None
    """A lower bound on :attr:`ratio` (for rates, where more is better); ``None``: none."""
    note: str = ""
    error: bool = False
    """The benchmark should have run but failed: counts as a miss under ``--check``."""

    @property
    def ratio(self) -> float | None:
        """``value / baseline``: how many baselines the measured thing costs."""
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def status(self) -> str:
        """``ok`` / ``MISS`` against the target; ``-`` without one; ``skip``; ``error``."""
        if self.error:
            return "error"
        if self.value is None:
            return "skip"
        if self.target is None and self.min_ratio is None:
            return "-"
        if self.target is not None and self.value >= self.target:
            return "MISS"
        if self.min_ratio is not None and (self.ratio is None or self.ratio < self.min_ratio):
            return "MISS"
        return "ok"

    @property
    def missed(self) -> bool:
        """Whether ``--check`` should fail on this row."""
        return self.status in {"MISS", "error"}


@cache
def _bytecode_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="motorpool-bench-pycache-")


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment, made independent of who runs it, plus ``overrides``.

    ``MOTORPOOL_*`` settings and ``PYTHONPATH`` are dropped. Bytecode is always written,
    to a private ``PYTHONPYCACHEPREFIX`` (source trees stay untouched): with
    ``PYTHONDONTWRITEBYTECODE`` set, every start would compile pydantic & co. from source
    and measure the compiler instead of motorpool. Warm-up runs fill that cache.
    """
    dropped = {"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MOTORPOOL_") and key not in dropped
    }
    env["PYTHONPYCACHEPREFIX"] = _bytecode_dir().name
    env.update(overrides)
    return env


def wall_time(command: Sequence[str], env: Mapping[str, str]) -> float:
    """Seconds one run of ``command`` takes, output discarded; raises if it fails."""
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def median_wall_time(command: Sequence[str], env: Mapping[str, str]) -> float:
    """Median seconds of :func:`repeats` runs, after one untimed run (bytecode, page cache)."""
    wall_time(command, env)
    return statistics.median(wall_time(command, env) for _ in range(repeats()))


def run_python_json(code: str, env: Mapping[str, str]) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter and parse the JSON object on its last stdout line."""
    done = subprocess.run(
        [PYTHON, "-c", code], env=env, check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}):\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"benchmark child printed nothing:\n{done.stderr}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


@dataclass(frozen=True, slots=True)
class Served:
    """A ``motorpool serve`` process that answers on ``url``."""

    url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def motorpool_serve(home: Path, env: Mapping[str, str], *args: str) -> Iterator[Served]:
    """``motorpool serve --preload bench`` over ``home`` (more ``args`` appended).

    Yields once ``/ready`` answers 200; the process is terminated on exit.
    """
    import httpx  # noqa: PLC0415 - the benchmarks that serve need it; the others do not

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [PYTHON, "-m", "motorpool", "serve", "--preload", "bench", "--port", str(port)]
    server_env = {**env, "MOTORPOOL_HOME": str(home), "MOTORPOOL_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [*command, *args], env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"motorpool serve exited with {process.returncode}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"motorpool serve was not ready in {SERVE_TIMEOUT_S} s")
            time.sleep(0.2)
        yield Served(url, process)
    finally:
        process.terminate()
        process.wait(30)


_DUMMY_MODULE = '''\
"""Dummy engine plugin {index} of motorpool's benchmarks: valid, and does nothing."""

from motorpool import hookimpl


@hookimpl
def motorpool_probe(deep):
    from motorpool.types import ProbeReport

    return ProbeReport(ready=False, notes=("benchmark dummy",))


@hookimpl
def motorpool_load(source, context):
    raise NotImplementedError("benchmark dummy")


@hookimpl
def motorpool_generate(model, request, context):
    raise NotImplementedError("benchmark dummy")
'''


def dummy_name(index: int) -> str:
    """The entry point name of dummy plugin ``index``."""
    return f"dummy-{index:02d}"


def make_dummy_plugins(root: Path, count: int) -> list[str]:
    """Write ``count`` installed-looking plugin distributions into ``root``, without pip.

    Each is a module ``motorpool_dummy_N`` and a ``.dist-info`` declaring it in the
    ``motorpool.engines`` group; put ``root`` on ``PYTHONPATH`` to install them all.
    Returns the entry point names.
    """
    names: list[str] = []
    for index in range(count):
        module = f"motorpool_dummy_{index:02d}"
        dist_info = root / f"{module}-0.1.dist-info"
        (root / module).mkdir(parents=True)
        dist_info.mkdir()
        (root / module / "__init__.py").write_text(_DUMMY_MODULE.format(index=index))
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: motorpool-dummy-{index:02d}\nVersion: 0.1\n"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[{ENGINES_GROUP}]\n{dummy_name(index)} = {module}\n"
        )
        (dist_info / "RECORD").write_text(
            "".join(
                f"{path},,\n"
                for path in (
                    f"{module}/__init__.py",
                    f"{dist_info.name}/METADATA",
                    f"{dist_info.name}/entry_points.txt",
                    f"{dist_info.name}/RECORD",
                )
            )
        )
        names.append(dummy_name(index))
    return names
