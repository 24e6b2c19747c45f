"""The probe and the matcher: cheap to import, exact about what to install, precise in claims.

Environments without world_engine or torch are real ones: a fresh interpreter whose
site-packages is a folder of links to this environment's, minus the packages a test
takes away. Nothing is patched.
"""

from __future__ import annotations

from pathlib import Path

from motorpool import Host, torchtools
from motorpool.engine import ResolvedSource
from motorpool.types import Capability, ModelOrigin, ModelSpec, ProbeReport
from motorpool_world_engine import _probe, plugin

from tests.support import probe_in_fresh_python, site_without

from .conftest import spec
from .test_bad_input import WORLD_ENGINE_CONFIG

HEAVY = ("torch", "world_engine", "numpy", "PIL", "safetensors", "imageio_ffmpeg")


def run_child(site: Path | None) -> dict[str, object]:
    """Import the plugin and probe in a fresh interpreter; ``site`` replaces site-packages."""
    return probe_in_fresh_python("motorpool_world_engine", plugin.PLUGIN, site, HEAVY)


def report_of(child: dict[str, object]) -> ProbeReport:
    """The child's report, read back into the wire type."""
    return ProbeReport.model_validate(child["report"])


def missing_of(report: ProbeReport) -> dict[str, str]:
    """``{package: install command}`` of what a report lists as missing."""
    return {entry.package: entry.install for entry in report.missing}


def test_import_and_quick_probe_import_nothing_heavy() -> None:
    """Importing the plugin and its quick probe load neither torch, world_engine nor Pillow."""
    child = run_child(None)
    assert child["heavy"] == [], f"imported at plugin import or quick probe: {child['heavy']}"
    assert isinstance(child["seconds"], float)
    assert child["seconds"] < 1.0
    report = report_of(child)
    assert report.ready
    assert report.capabilities == {Capability.WORLD}


def test_without_world_engine_the_plugin_is_ready_and_names_the_git_install(
    tmp_path: Path,
) -> None:
    """world_engine is optional: listed missing with its git command, the plugin still ready."""
    report = report_of(run_child(site_without(tmp_path, "world_engine")))
    assert report.ready
    assert missing_of(report) == {"world_engine": _probe.WORLD_ENGINE_INSTALL}
    assert "git+https://github.com/Overworldai/world_engine.git" in _probe.WORLD_ENGINE_INSTALL
    assert "without world_engine only the self-check model loads" in report.notes


def test_without_torch_the_plugin_is_not_ready(tmp_path: Path) -> None:
    """Without torch the plugin cannot run even its tiny model: torch's install command."""
    report = report_of(run_child(site_without(tmp_path, "torch", "world_engine")))
    assert not report.ready
    assert missing_of(report) == {
        "torch": torchtools.torch_install_command(),
        "world_engine": _probe.WORLD_ENGINE_INSTALL,
    }


def test_deep_probe_lists_torchs_devices_and_what_quantisation_needs() -> None:
    """The deep probe names torch's devices and, per GPU, the quantisations it allows."""
    report = plugin.motorpool_probe(deep=True)
    assert report.ready
    assert report.devices[0].name == "cpu"
    gpu_notes = [n for n in report.notes if n.startswith(("no CUDA GPU", "cuda:"))]
    assert gpu_notes, report.notes


def test_match_claims_world_model_folders_and_hub_ids(world: Path, tmp_path: Path) -> None:
    """The tiny folder and a world_engine config.yaml folder match; other folders do not."""
    any_spec = ModelSpec(source="x")
    assert plugin.motorpool_match(spec=any_spec, path=world) == 80
    waypoint = tmp_path / "waypoint"
    waypoint.mkdir()
    (waypoint / "config.yaml").write_text(WORLD_ENGINE_CONFIG, encoding="utf-8")
    assert plugin.motorpool_match(spec=any_spec, path=waypoint) == 80
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("hidden_size: 512\nvocab_size: 32000\n", encoding="utf-8")
    (other / "model.safetensors").write_bytes(b"\x00" * 8)
    assert plugin.motorpool_match(spec=any_spec, path=other) is None
    assert plugin.motorpool_match(spec=any_spec, path=tmp_path / "empty") is None
    for hub_id in ("Overworld/Waypoint-1-Small", "overworld/waypoint-1.5-1b", "me/waypoint-fork"):
        assert plugin.motorpool_match(spec=ModelSpec(source=hub_id), path=None) == 60, hub_id
    for hub_id in ("Qwen/Qwen2.5-0.5B", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"):
        assert plugin.motorpool_match(spec=ModelSpec(source=hub_id), path=None) is None, hub_id


def test_a_bare_path_is_matched_to_the_plugin(host: Host, world: Path) -> None:
    """A tiny model's folder, named without a plugin, is loaded by this one."""
    info = host.load(str(world))
    assert info.plugin == plugin.PLUGIN
    assert info.details["backend"] == "tiny"
    assert info.capabilities == {Capability.WORLD}


def test_memory_estimate_is_the_weights_on_disk(world: Path) -> None:
    """Before loading, the host budgets the safetensors' size."""
    source = ResolvedSource(spec=spec(world), path=world, origin=ModelOrigin.LOCAL)
    on_disk = sum(p.stat().st_size for p in world.glob("*.safetensors"))
    assert plugin.motorpool_estimate_memory(source=source) == on_disk > 0


def test_the_tiny_model_hook_builds_a_model_that_opens(host: Host, tmp_path: Path) -> None:
    """motorpool check's tiny model: a folder the plugin builds, and a seed that opens on it."""
    tiny = host.tiny_model(plugin.PLUGIN, tmp_path / "check")
    assert tiny is not None
    assert tiny.seed is not None
    with host.session(tiny.spec, seed=tiny.seed) as session:
        assert len(session.step().frames) == session.info.frames_per_step
