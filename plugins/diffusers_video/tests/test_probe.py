"""The probe: cheap to import, honest about the machine, exact about what to install.

Environments without torch or imageio-ffmpeg are real ones: a fresh interpreter whose
site-packages is a folder of links to this environment's, minus the packages a test
takes away (``-S`` keeps the real site-packages out, ``site.addsitedir`` reads the links
and the editable installs' ``.pth`` files). Nothing is patched.
"""

from __future__ import annotations

from pathlib import Path

from motorpool import torchtools
from motorpool.engine import ResolvedSource
from motorpool.types import ModelOrigin, ModelSpec, PluginState
from motorpool_diffusers_video import _probe, plugin

from tests.support import probe_in_fresh_python, site_without

from .conftest import PLUGIN, image_pipeline_folder

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "imageio", "imageio_ffmpeg", "PIL")


def run_child(site: Path | None) -> dict[str, object]:
    """Import the plugin and probe in a fresh interpreter; ``site`` replaces site-packages."""
    return probe_in_fresh_python("motorpool_diffusers_video", PLUGIN, site, HEAVY)


def test_import_and_quick_probe_never_import_the_engine() -> None:
    child = run_child(None)
    assert child["heavy"] == [], f"imported at plugin import or quick probe: {child['heavy']}"
    assert isinstance(child["seconds"], float)
    assert child["seconds"] < 1.0
    report = child["report"]
    assert isinstance(report, dict)
    assert report["ready"] is True
    assert set(report["capabilities"]) == {"video", "image_to_video"}
    assert child["tiny"] is True  # building the tiny model imports torch, inside the hook


def test_missing_packages_name_their_install_commands(tmp_path: Path) -> None:
    child = run_child(site_without(tmp_path, "torch", "imageio_ffmpeg"))
    report = child["report"]
    assert isinstance(report, dict)
    assert report["ready"] is False
    missing = {entry["package"]: entry["install"] for entry in report["missing"]}
    assert missing == {
        "torch": torchtools.torch_install_command(),
        "imageio-ffmpeg": _probe.LIBRARIES_INSTALL,
    }
    assert child["state"] == PluginState.LOADED.value  # the plugin itself imports fine
    assert child["tiny"] is False  # and builds no tiny model it could not run
    assert child["heavy"] == []


def test_deep_probe_lists_torchs_devices() -> None:
    report = plugin.motorpool_probe(deep=True)
    assert report.ready
    assert report.devices[0].name == "cpu"
    assert any(note.startswith("default device: cpu") for note in report.notes)


def test_match_claims_video_folders_and_hub_ids(wan_folder: Path, tmp_path: Path) -> None:
    spec = ModelSpec(source="x")
    assert plugin.motorpool_match(spec=spec, path=wan_folder) == 80
    assert plugin.motorpool_match(spec=spec, path=image_pipeline_folder(tmp_path / "sd")) is None
    assert plugin.motorpool_match(spec=spec, path=tmp_path) is None
    hub = ModelSpec(source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    assert plugin.motorpool_match(spec=hub, path=None) == 50
    assert plugin.motorpool_match(spec=ModelSpec(source="org/llama"), path=None) is None


def test_memory_estimate_counts_weights_at_the_chosen_dtype(wan_folder: Path) -> None:
    def estimate(options: dict[str, str]) -> int | None:
        source = ResolvedSource(
            spec=ModelSpec(plugin=PLUGIN, source=str(wan_folder), options=options),
            path=wan_folder,
            origin=ModelOrigin.LOCAL,
        )
        return plugin.motorpool_estimate_memory(source=source)

    full, half = estimate({"dtype": "float32"}), estimate({"dtype": "bfloat16"})
    assert full is not None
    assert half is not None
    on_disk = sum(p.stat().st_size for p in wan_folder.rglob("*.safetensors"))
    assert on_disk < full < on_disk * 1.3  # stored float32, plus a quarter for activations
    assert abs(half * 2 - full) <= 2
