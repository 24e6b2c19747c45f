"""The probe: cheap to import, honest about the machine, exact about what to install.

Environments without mlx are real ones: a fresh interpreter whose site-packages is a
folder of links to this environment's, minus the packages a test takes away (``-S``
keeps the real site-packages out, ``site.addsitedir`` reads the links and the editable
installs' ``.pth`` files). Nothing is patched.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlx_lm
import pytest
from motorpool import Host
from motorpool.types import Accelerator, PluginState
from motorpool_mlx import _probe

from tests.support import probe_in_fresh_python, site_without

HEAVY = ("mlx", "mlx.core", "mlx_lm", "transformers", "tokenizers", "torch")


def run_child(site: Path | None) -> dict[str, object]:
    """Import the plugin and probe in a fresh interpreter; ``site`` replaces site-packages."""
    return probe_in_fresh_python("motorpool_mlx", "mlx", site, HEAVY)


def test_import_and_quick_probe_never_import_the_engine() -> None:
    child = run_child(None)
    assert child["heavy"] == [], f"imported at plugin import or quick probe: {child['heavy']}"
    assert isinstance(child["seconds"], float)
    assert child["seconds"] < 1.0
    report = child["report"]
    assert isinstance(report, dict)
    assert report["ready"] is True


def test_quick_probe_on_this_machine() -> None:
    started = time.perf_counter()
    report = _probe.probe(deep=False)
    assert time.perf_counter() - started < 0.5
    assert report.ready
    assert report.engine_version == mlx_lm.__version__
    assert report.devices[0].accelerator is Accelerator.CPU
    assert report.missing == ()
    assert {"chat", "completion"} == {c.value for c in report.capabilities}


def test_deep_probe_asks_mlx(mlx_host: Host) -> None:
    (probe,) = [probe for probe in mlx_host.probe(deep=True) if probe.plugin == "mlx"]
    assert probe.report is not None
    assert probe.report.ready
    assert any(note.startswith("default device:") for note in probe.report.notes)
    if sys.platform == "linux":
        assert "default device: cpu" in probe.report.notes


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux build's packages")
@pytest.mark.parametrize(
    ("hidden", "missing"),
    [
        (("mlx", "mlx_cpu", "mlx_lm"), {"mlx[cpu]": "pip install 'mlx[cpu]' mlx-lm"}),
        (("mlx_cpu",), {"mlx[cpu]": "pip install 'mlx[cpu]'"}),
        (("mlx_lm",), {"mlx-lm": "pip install 'mlx[cpu]' mlx-lm"}),
    ],
    ids=["nothing", "mlx-without-backend", "no-mlx-lm"],
)
def test_missing_packages_name_the_install_command(
    tmp_path: Path, hidden: tuple[str, ...], missing: dict[str, str]
) -> None:
    child = run_child(site_without(tmp_path, *hidden))
    report = child["report"]
    assert isinstance(report, dict)
    assert report["ready"] is False
    found = {entry["package"]: entry["install"] for entry in report["missing"]}
    for package, command in missing.items():
        assert found.get(package) == command, found
    assert child["state"] == PluginState.LOADED.value  # the plugin itself imports fine
    assert child["tiny"] is False  # and builds no tiny model it could not run
    assert child["heavy"] == []


@pytest.mark.parametrize(
    ("system", "machine", "libc", "reason"),
    [
        ("darwin", "arm64", ("", ""), None),
        ("linux", "x86_64", ("glibc", "2.36"), None),
        ("linux", "aarch64", ("glibc", "2.35"), None),
        ("darwin", "x86_64", ("", ""), "MLX needs Apple silicon (arm64); this Mac is x86_64"),
        ("linux", "x86_64", ("glibc", "2.31"), "need glibc 2.35 or newer; this machine has 2.31"),
        ("win32", "AMD64", ("", ""), "this machine runs win32 on AMD64"),
        ("freebsd14", "amd64", ("", ""), "MLX runs on Apple silicon (macOS, Metal) and on Linux"),
    ],
)
def test_platforms(system: str, machine: str, libc: tuple[str, str], reason: str | None) -> None:
    found = _probe.unsupported_platform(system, machine, libc)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found


def test_install_command_per_platform() -> None:
    assert _probe.install_command("linux") == "pip install 'mlx[cpu]' mlx-lm"
    assert _probe.install_command("darwin") == "pip install mlx-lm"
