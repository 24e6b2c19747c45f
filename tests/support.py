"""Helpers shared by the test modules (the core's and the plugins'): the CLI runner, request
builders, hosts over one plugin, fresh-interpreter probes and README checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path

from motorpool import Settings, torchtools
from motorpool.types import ChatRequest, ModelSpec

MOTORPOOL = Path(sys.executable).with_name("motorpool")


def motorpool(
    *args: str,
    home: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``motorpool`` console script with ``MOTORPOOL_HOME=home`` (in ``home``)."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MOTORPOOL_")
    }
    environment.update({"MOTORPOOL_HOME": str(home), **(env or {})})
    result = subprocess.run(
        [str(MOTORPOOL), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or home,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def spec(model_file: Path, name: str, **options: object) -> ModelSpec:
    """A test-engine spec named ``name`` for ``model_file`` with load ``options``."""
    return ModelSpec.model_validate(
        {"name": name, "plugin": "testengine", "source": str(model_file), "options": options}
    )


def chat(text: str = "hi", max_tokens: int = 8, seed: int | None = None) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "sampling": {"seed": seed},
        }
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


class Background:
    """A call running on its own thread; ``outcome`` is its result or what it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.outcome: object = None
        self._call = call
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.outcome = self._call()
        except BaseException as exc:  # noqa: BLE001 - the test inspects what was raised
            self.outcome = exc

    def join(self, timeout_s: float = 5.0) -> object:
        """Wait for the call; fail the test if it is still running after ``timeout_s``."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the call is still running"
        return self.outcome


def run_fresh_python(code: str, site: Path | None, heavy: tuple[str, ...]) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter and parse the JSON object on its last line.

    ``code`` sees ``SITE`` (the folder to use as site-packages, or ``None``) and ``HEAVY``
    (module names it may report as imported). With ``site``, the interpreter starts with
    ``-S`` so the real site-packages stays out and ``code`` adds ``site`` itself.
    """
    prelude = f"SITE = {str(site)!r} if {site is not None} else None\nHEAVY = {heavy!r}\n"
    command = [sys.executable, *(["-S"] if site is not None else []), "-c", prelude + code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def site_without(tmp_path: Path, *hidden: str) -> Path:
    """This environment's site-packages as links, without the distributions named.

    A real environment without those packages (no patching): pass it to
    :func:`run_fresh_python`, which reads the links and the editable installs' ``.pth``.
    """
    farm = tmp_path / "site-packages"
    farm.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.split("-")[0].lower() not in hidden:
            (farm / entry.name).symlink_to(entry)
    return farm


def plugin_settings(plugin: str, home: Path, **overrides: object) -> Settings:
    """A host over a private home that discovers only ``plugin`` and never unloads idle models."""
    fields: dict[str, object] = {
        "plugins": plugin,
        "home": home,
        "models_file": home / "models.toml",
        "model_dirs": (),
        "keep_alive_s": -1,
        **overrides,
    }
    return Settings.model_validate(fields)


_PROBE_CHILD = """
import importlib, json, site, sys, tempfile, time
from pathlib import Path
if SITE is not None:
    site.addsitedir(SITE)
started = time.perf_counter()
import motorpool.engine, motorpool.types  # what every plugin imports: the floor
core = time.perf_counter() - started
started = time.perf_counter()
plugin = importlib.import_module(PACKAGE + ".plugin")
report = plugin.motorpool_probe(deep=False)
seconds = time.perf_counter() - started
heavy = [name for name in HEAVY if name in sys.modules]
from motorpool import Host, Settings
home = Path(tempfile.mkdtemp())
with Host(Settings(plugins=PLUGIN, home=home, keep_alive_s=-1)) as host:
    (record,) = [record for record in host.plugins if record.name == PLUGIN]
    tiny = host.tiny_model(PLUGIN, home)
print(json.dumps({
    "report": report.model_dump(mode="json"), "seconds": seconds, "core": core, "heavy": heavy,
    "state": record.state.value, "tiny": tiny is not None,
}))
"""


def probe_in_fresh_python(
    package: str, plugin: str, site: Path | None, heavy: tuple[str, ...]
) -> dict[str, object]:
    """Import ``package.plugin`` and run its quick probe in a fresh interpreter.

    Then a host over ``plugin`` alone asks it for its tiny model. The result: ``report``
    (the probe's, as JSON), ``seconds`` (the plugin's import and probe, beyond ``core``:
    the import of what every plugin imports), ``heavy`` (the modules of ``heavy`` that
    the import and probe brought in), ``state`` (the plugin's, in the host) and ``tiny``
    (whether it built a tiny model). ``site`` is as for :func:`run_fresh_python`.
    """
    names = f"PACKAGE = {package!r}\nPLUGIN = {plugin!r}\n"
    return run_fresh_python(names + _PROBE_CHILD, site, heavy)


_OPTION_ROW = re.compile(r"^\| `([a-z_0-9]+)` \| ([^|]+) \|", flags=re.MULTILINE)
TORCH_INSTALL_COMMANDS = (
    torchtools.TORCH_CUDA,
    torchtools.TORCH_CPU,
    torchtools.TORCH_ROCM,
    torchtools.TORCH_WINDOWS_CUDA,
)
"""The torch install commands a torch plugin's README names."""


def options_table(readme: str) -> dict[str, str]:
    """A plugin README's options table: each option's name to its default column."""
    return dict(_OPTION_ROW.findall(readme))


def assert_default_written(default: object, written: str) -> None:
    """Fail unless ``written`` (a default column) gives ``default`` as the READMEs write it.

    ``None`` in words (none, the pipeline's own...), integers bare, anything else
    (booleans in lower case) in backticks.
    """
    written = written.strip()
    if default is None:
        assert not written.startswith("`"), written
    elif isinstance(default, bool):
        assert written == f"`{str(default).lower()}`"
    elif isinstance(default, int):
        assert written == str(default)
    else:
        assert written == f"`{default}`"
