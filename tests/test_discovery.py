"""Real plugin discovery against deliberately broken plugin packages.

The packages in ``tests/plugins/broken`` are installed into a folder of their own (the
``broken_plugins`` fixture) that each test puts on ``sys.path``: discovery then finds
their entry points through the same importlib.metadata / stevedore path as for any
installed plugin. Every plugin must end in a visible state (loaded, disabled, failed),
one broken plugin must never stop the others, and strict mode turns failures into an
error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import stevedore._cache
from motorpool import Host, Settings
from motorpool.errors import LoadFailed, PluginDiscoveryError, PluginUnavailable
from motorpool.types import ChatRequest, ModelSpec, ModelStatus, PluginState, TextResult
from motorpool_testengine.plugin import write_model
from structlog.testing import capture_logs

VERSION = "0.1.0"
"""The version of every broken package (their pyproject.toml)."""

CONTRACT_HINT = "does not match this motorpool's hook contract"

BROKEN_MODULES = {
    "assert-import": "motorpool_assert_import",
    "broken-import": "motorpool_broken_import",
    "bad-signature": "motorpool_bad_signature",
    "missing-dependency": "motorpool_missing_dependency",
    "typo-hook": "motorpool_typo_hook",
    "raising-hook": "motorpool_raising_hook",
}
"""Entry-point name -> the module it names, for every package in tests/plugins/broken."""

FAILING = ("assert-import", "bad-signature", "broken-import", "missing-dependency", "typo-hook")
"""The plugins discovery must fail; raising-hook is valid until its hooks are called."""

GOOD = ("raising-hook", "testengine", "testengine-generate-only")
"""The plugins discovery must load, with the broken packages installed beside them."""

ENV_VARS = ("MOTORPOOL_PLUGINS", "MOTORPOOL_STRICT_PLUGINS", "MOTORPOOL_CONFIG")

# The error and the fix hint each failing plugin must be reported with.
EXPECTED_FAILURES = {
    "assert-import": (
        ("AssertionError: motorpool-assert-import fails an assert at import on purpose",),
        ("pip install --upgrade motorpool-assert-import",),
    ),
    "broken-import": (
        ("RuntimeError: motorpool-broken-import fails at import on purpose",),
        ("pip install --upgrade motorpool-broken-import",),
    ),
    "bad-signature": (
        ("PluginValidationError", "motorpool_load", "extra_arg"),
        (CONTRACT_HINT, "pip install --upgrade motorpool-bad-signature"),
    ),
    "missing-dependency": (
        ("ModuleNotFoundError", "motorpool_nonexistent_dep_xyz"),
        (
            "motorpool-missing-dependency needs",
            "pip install 'motorpool-nonexistent-dep-xyz>=1.0'",
        ),
    ),
    "typo-hook": (
        ("unknown hook motorpool_genrate", "did you mean motorpool_generate"),
        (CONTRACT_HINT, "pip install --upgrade motorpool-typo-hook"),
    ),
}


class ImportRecorder:
    """A meta-path finder that records every attempt to import a broken plugin's module."""

    def __init__(self) -> None:
        self.attempted: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname.split(".", maxsplit=1)[0] in BROKEN_MODULES.values():
            self.attempted.append(fullname)
        return None  # let the real finders import it


def _forget_broken_modules() -> None:
    for module in list(sys.modules):
        if module.split(".", maxsplit=1)[0] in BROKEN_MODULES.values():
            del sys.modules[module]


@pytest.fixture
def imports() -> ImportRecorder:
    """The imports of broken plugin modules that the test's discovery attempted."""
    return ImportRecorder()


@pytest.fixture
def plugin_path(
    broken_plugins: Path,
    imports: ImportRecorder,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Path]:
    """Put the broken packages on ``sys.path`` with caches and environment of this test only."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOTORPOOL_HOME", str(tmp_path))  # no user config file is read
    # stevedore caches entry points by sys.path, in memory and on disk; keep both per test.
    # It reads XDG_CACHE_HOME once, at import, so its cache object is patched too.
    cache_home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.setattr(stevedore._cache._c, "_dir", str(cache_home / "python-entrypoints"))
    monkeypatch.setattr(stevedore._cache._c, "_internal", {})
    _forget_broken_modules()
    monkeypatch.syspath_prepend(str(broken_plugins))
    monkeypatch.setattr(sys, "meta_path", [imports, *sys.meta_path])
    yield broken_plugins
    _forget_broken_modules()


def _host(tmp_path: Path, **settings: Any) -> Host:
    return Host(Settings(home=tmp_path, **settings))


def _states(host: Host) -> dict[str, PluginState]:
    return {record.name: record.state for record in host.plugins}


def _tiny_model(tmp_path: Path) -> ModelSpec:
    return ModelSpec(plugin="testengine", source=str(write_model(tmp_path / "tiny.mptest.json")))


def _chat(text: str = "Hello") -> ChatRequest:
    return ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": text}], "max_tokens": 4}
    )


# -- every plugin ends in a visible state -----------------------------------------------------


@pytest.mark.usefixtures("plugin_path")
@pytest.mark.parametrize("name", FAILING)
def test_broken_plugin_is_failed_with_distribution_version_and_hint(
    name: str, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        host = _host(tmp_path)
    with host:
        record = next(r for r in host.plugins if r.name == name)

    assert record.state is PluginState.FAILED
    assert record.entry_point == BROKEN_MODULES[name]
    assert record.distribution == f"motorpool-{name}"
    assert record.version == VERSION
    assert record.hooks == ()
    errors, hints = EXPECTED_FAILURES[name]
    assert record.error is not None
    assert record.hint is not None
    for part in errors:
        assert part in record.error
    for part in hints:
        assert part in record.hint
    warnings = [e for e in logs if e.get("plugin") == name and e["log_level"] == "warning"]
    assert warnings, f"no warning was logged for {name}: {logs}"


@pytest.mark.usefixtures("plugin_path")
def test_good_plugins_load_beside_broken_ones(tmp_path: Path) -> None:
    with _host(tmp_path) as host:
        states = _states(host)
        records = {r.name: r for r in host.plugins}

    assert {name: states[name] for name in FAILING} == dict.fromkeys(FAILING, PluginState.FAILED)
    assert {name: states[name] for name in GOOD} == dict.fromkeys(GOOD, PluginState.LOADED)
    assert PluginState.DISABLED not in states.values()  # no allow-list: nothing disabled
    raising = records["raising-hook"]
    assert raising.distribution == "motorpool-raising-hook"
    assert raising.version == VERSION
    assert raising.hooks == ("motorpool_generate", "motorpool_load", "motorpool_probe")
    assert raising.error is None
    testengine = records["testengine"]
    assert testengine.distribution == "motorpool-testengine"
    assert "motorpool_stream" in testengine.hooks


@pytest.mark.usefixtures("plugin_path")
def test_broken_plugins_leave_a_working_host(tmp_path: Path) -> None:
    with _host(tmp_path) as host:
        info = host.load(_tiny_model(tmp_path))
        result = host.generate(info.id, _chat())

    assert info.status is ModelStatus.READY
    assert isinstance(result, TextResult)
    assert result.usage.completion_tokens > 0


@pytest.mark.usefixtures("plugin_path")
@pytest.mark.parametrize("name", FAILING)
def test_a_failed_plugin_cannot_load_models(name: str, tmp_path: Path) -> None:
    with _host(tmp_path) as host, pytest.raises(PluginUnavailable) as raised:
        host.load(ModelSpec(plugin=name, source=str(tmp_path)))

    assert f"plugin {name!r} is failed" in raised.value.message
    assert raised.value.hint is not None
    assert f"motorpool-{name}" in raised.value.hint


# -- MOTORPOOL_PLUGINS allow-list -------------------------------------------------------------


@pytest.mark.usefixtures("plugin_path")
def test_empty_allow_list_disables_every_plugin_without_importing_it(
    tmp_path: Path, imports: ImportRecorder
) -> None:
    with _host(tmp_path, plugins="") as host:
        records = host.plugins
        probes = host.probe()
        with pytest.raises(PluginUnavailable) as raised:
            host.load(_tiny_model(tmp_path))

    assert {r.name for r in records} >= {*FAILING, *GOOD}
    assert {r.state for r in records} == {PluginState.DISABLED}
    for record in records:
        assert record.hint == f"add {record.name!r} to MOTORPOOL_PLUGINS to enable it"
        assert record.error is None
    assert {p.state for p in probes} == {PluginState.DISABLED}
    assert all(p.report is None for p in probes)
    assert raised.value.hint == "add 'testengine' to MOTORPOOL_PLUGINS to enable it"
    assert imports.attempted == []
    assert not set(BROKEN_MODULES.values()) & set(sys.modules)


@pytest.mark.usefixtures("plugin_path")
@pytest.mark.parametrize("value", ["testengine,raising-hook", " raising-hook , testengine ,"])
def test_allow_list_loads_only_the_plugins_named(
    value: str, tmp_path: Path, imports: ImportRecorder
) -> None:
    with capture_logs() as logs, _host(tmp_path, plugins=value) as host:
        states = _states(host)

    assert states["testengine"] is PluginState.LOADED
    assert states["raising-hook"] is PluginState.LOADED
    for name in (*FAILING, "testengine-generate-only"):
        assert states[name] is PluginState.DISABLED
    # Disabled code never runs: not imported, not even looked for.
    assert imports.attempted == ["motorpool_raising_hook"]
    for name in FAILING:
        assert BROKEN_MODULES[name] not in sys.modules
    assert not [e for e in logs if e["log_level"] == "warning"]


@pytest.mark.usefixtures("plugin_path")
def test_allow_list_warns_about_unknown_names(tmp_path: Path) -> None:
    with capture_logs() as logs, _host(tmp_path, plugins="testengine,no-such-plugin") as host:
        states = _states(host)

    assert states["testengine"] is PluginState.LOADED
    assert "no-such-plugin" not in states
    unknown = [e for e in logs if e["event"] == "allowed plugin is not installed"]
    assert len(unknown) == 1
    assert unknown[0]["log_level"] == "warning"
    assert unknown[0]["plugin"] == "no-such-plugin"
    assert unknown[0]["setting"] == "MOTORPOOL_PLUGINS"
    assert {*FAILING, *GOOD} <= set(unknown[0]["installed"])


@pytest.mark.usefixtures("plugin_path")
def test_allow_list_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTORPOOL_PLUGINS", "typo-hook")
    with _host(tmp_path) as host:
        states = _states(host)

    assert states["typo-hook"] is PluginState.FAILED
    assert {states[name] for name in states if name != "typo-hook"} == {PluginState.DISABLED}


# -- strict mode ------------------------------------------------------------------------------


@pytest.mark.usefixtures("plugin_path")
def test_strict_mode_turns_plugin_failures_into_an_error(tmp_path: Path) -> None:
    with _host(tmp_path) as host:  # the same discovery, not strict: what fails here
        failed = [r.name for r in host.plugins if r.state is PluginState.FAILED]
    with pytest.raises(PluginDiscoveryError) as raised:
        _host(tmp_path, strict_plugins=True)

    assert set(FAILING) <= set(failed)
    error = raised.value
    assert error.code == "plugin_failed"
    assert error.message.startswith(f"{len(failed)} plugin(s) failed: ")
    for name in FAILING:
        assert f"{name}: " in error.message
    for name in GOOD:
        assert f"{name}: " not in error.message
    assert "did you mean motorpool_generate" in error.message
    assert error.hint is not None
    assert "MOTORPOOL_STRICT_PLUGINS" in error.hint


@pytest.mark.usefixtures("plugin_path")
def test_strict_mode_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTORPOOL_STRICT_PLUGINS", "true")
    monkeypatch.setenv("MOTORPOOL_PLUGINS", "testengine,missing-dependency")
    with pytest.raises(PluginDiscoveryError, match=r"^1 plugin\(s\) failed: missing-dependency: "):
        _host(tmp_path)


@pytest.mark.usefixtures("plugin_path")
def test_strict_mode_ignores_disabled_plugins(tmp_path: Path) -> None:
    with _host(tmp_path, strict_plugins=True, plugins="testengine,raising-hook") as host:
        states = _states(host)

    assert PluginState.FAILED not in states.values()
    assert states["broken-import"] is PluginState.DISABLED


# -- hooks that raise -------------------------------------------------------------------------


@pytest.mark.usefixtures("plugin_path")
def test_probe_reports_a_raising_probe_without_affecting_others(tmp_path: Path) -> None:
    with capture_logs() as logs, _host(tmp_path) as host:
        probes = {p.plugin: p for p in host.probe()}

    raising = probes["raising-hook"]
    assert raising.state is PluginState.LOADED
    assert raising.report is None
    assert raising.error == "RuntimeError: raising-hook probe fails on purpose"
    for name in ("testengine", "testengine-generate-only"):
        assert probes[name].error is None
        assert probes[name].report is not None
        assert probes[name].report.ready
    for name in FAILING:
        assert probes[name].state is PluginState.FAILED
        assert probes[name].report is None
        assert probes[name].error
    failed = [e for e in logs if e["event"] == "probe failed"]
    assert [e["plugin"] for e in failed] == ["raising-hook"]


@pytest.mark.usefixtures("plugin_path")
def test_a_raising_load_fails_that_model_only(tmp_path: Path) -> None:
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"not a model")
    with _host(tmp_path) as host:
        good = host.load(_tiny_model(tmp_path))
        with pytest.raises(LoadFailed, match="raising-hook load fails on purpose"):
            host.load(f"raising-hook:{model_file}")

        models = {m.plugin: m for m in host.models()}
        failed = models["raising-hook"]
        assert failed.status is ModelStatus.FAILED
        assert failed.error is not None
        assert failed.error.code == "load_failed"
        assert "raising-hook load fails on purpose" in failed.error.message
        assert models["testengine"].status is ModelStatus.READY
        result = host.generate(good.id, _chat())
        assert isinstance(result, TextResult)
        assert host.model(good.id).status is ModelStatus.READY
        # A failed model is tried again by the next request, and fails the same way.
        with pytest.raises(LoadFailed, match="raising-hook load fails on purpose"):
            host.generate(failed.id, _chat())
        assert host.model(failed.id).status is ModelStatus.FAILED


# -- a real process ---------------------------------------------------------------------------

_HOST_SCRIPT = textwrap.dedent(
    """
    import json
    import motorpool

    with motorpool.Host() as host:
        print(json.dumps({
            "plugins": {r.name: r.model_dump(mode="json") for r in host.plugins},
            "probes": {p.plugin: p.error for p in host.probe()},
        }))
    """
)


def _run_host(broken_plugins: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    python_path = os.pathsep.join(filter(None, [str(broken_plugins), clean.get("PYTHONPATH")]))
    clean |= {
        "PYTHONPATH": python_path,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "MOTORPOOL_HOME": str(tmp_path),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", _HOST_SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=clean,
        timeout=60,
    )


def test_a_host_process_starts_with_broken_plugins_installed(
    broken_plugins: Path, tmp_path: Path
) -> None:
    done = _run_host(broken_plugins, tmp_path)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    plugins = report["plugins"]
    for name in FAILING:
        assert plugins[name]["state"] == "failed"
        assert plugins[name]["distribution"] == f"motorpool-{name}"
        assert plugins[name]["version"] == VERSION
        assert plugins[name]["hint"]
    for name in GOOD:
        assert plugins[name]["state"] == "loaded"
    assert (
        "pip install 'motorpool-nonexistent-dep-xyz>=1.0'" in plugins["missing-dependency"]["hint"]
    )
    assert report["probes"]["raising-hook"] == "RuntimeError: raising-hook probe fails on purpose"
    assert report["probes"]["testengine"] is None
    assert "plugin failed to import" in done.stderr  # the failures are logged, not hidden


def test_a_strict_host_process_refuses_to_start(broken_plugins: Path, tmp_path: Path) -> None:
    done = _run_host(broken_plugins, tmp_path, MOTORPOOL_STRICT_PLUGINS="1")

    assert done.returncode != 0
    assert done.stdout == ""
    assert "PluginDiscoveryError" in done.stderr
    assert "plugin(s) failed: " in done.stderr
    for name in FAILING:
        assert f"{name}: " in done.stderr
