"""The probe: cheap to import, honest about the machine, exact about what to install.

Environments without torch or diffusers are real ones: a fresh interpreter whose
site-packages is a folder of links to this environment's, minus the packages a test
takes away (``-S`` keeps the real site-packages out, ``site.addsitedir`` reads the links
and the editable installs' ``.pth`` files). Nothing is patched.
"""

from __future__ import annotations

import time
from pathlib import Path

import diffusers
import pytest
import torch
from motorpool import Host, torchtools
from motorpool.types import Accelerator, PluginState
from motorpool_diffusers_image import _probe

from tests.support import probe_in_fresh_python, site_without

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "PIL")


def run_child(site: Path | None) -> dict[str, object]:
    """Import the plugin and probe in a fresh interpreter; ``site`` replaces site-packages."""
    return probe_in_fresh_python("motorpool_diffusers_image", "diffusers-image", site, HEAVY)


def test_import_and_quick_probe_never_import_the_engine() -> None:
    child = run_child(None)
    assert child["heavy"] == [], f"imported at plugin import or quick probe: {child['heavy']}"
    seconds, core = child["seconds"], child["core"]
    assert isinstance(seconds, float)
    assert isinstance(core, float)
    # The plugin's own import and quick probe, beyond motorpool's: tens of milliseconds
    # on an idle machine; the bound leaves room for a busy one.
    assert seconds < max(0.25, core), (seconds, core)
    report = child["report"]
    assert isinstance(report, dict)
    assert report["ready"] is True
    assert child["tiny"] is True  # building the tiny model imports torch, inside the hook


def test_quick_probe_on_this_machine() -> None:
    started = time.perf_counter()
    report = _probe.probe(deep=False)
    assert time.perf_counter() - started < 0.5
    assert report.ready
    assert report.engine_version == diffusers.__version__
    assert report.devices[0].accelerator is Accelerator.CPU
    assert report.missing == ()
    assert {c.value for c in report.capabilities} == {"image", "image_to_image"}
    assert f"torch {torch.__version__}" in report.notes


def test_deep_probe_asks_torch(host: Host) -> None:
    (probe,) = [probe for probe in host.probe(deep=True) if probe.plugin == "diffusers-image"]
    assert probe.report is not None
    assert probe.report.ready
    cpu = probe.report.devices[0]
    assert cpu.accelerator is Accelerator.CPU
    assert cpu.memory_bytes is not None
    assert cpu.memory_bytes > 0
    if not torch.cuda.is_available():
        assert "default device: cpu (float32)" in probe.report.notes


@pytest.mark.parametrize(
    ("hidden", "missing"),
    [
        (("torch",), {"torch": torchtools.torch_install_command()}),
        (("diffusers", "accelerate"), {"diffusers": _probe.LIBRARIES_INSTALL}),
    ],
    ids=["no-torch", "no-diffusers"],
)
def test_missing_packages_name_the_install_command(
    tmp_path: Path, hidden: tuple[str, ...], missing: dict[str, str]
) -> None:
    child = run_child(site_without(tmp_path, *hidden))
    report = child["report"]
    assert isinstance(report, dict)
    assert report["ready"] is False
    found = {entry["package"]: entry["install"] for entry in report["missing"]}
    assert found.keys() >= missing.keys()
    for package, command in missing.items():
        assert found[package] == command
    assert child["state"] == PluginState.LOADED.value  # the plugin itself imports fine
    assert child["tiny"] is False  # and builds no tiny model it could not run
    assert child["heavy"] == []
