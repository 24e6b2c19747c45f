"""Bad input gets a clear typed 4xx error, and a refused load or session leaves nothing behind."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from motorpool import Host
from motorpool.errors import (
    InvalidModel,
    InvalidOptions,
    InvalidRequest,
    MotorpoolError,
    PluginUnavailable,
    SourceNotFound,
)
from motorpool.types import ControlInput, SeedFrame, SessionConfig
from motorpool_world_engine import _probe
from motorpool_world_engine.tiny import CONFIG_FILE
from PIL import Image
from pydantic import JsonValue, ValidationError

from .conftest import spec
from .test_session import pixels

WORLD_ENGINE_CONFIG = "n_frames: 512\nn_buttons: 256\ntokens_per_frame: 256\n"
"""The keys of a world_engine config.yaml the plugin recognises a model by."""


def device_threads() -> int:
    """The world models' device threads alive in this process."""
    return sum(t.name.startswith("world-engine") for t in threading.enumerate())


def image(width: int, height: int, media: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, media)
    return out.getvalue()


# -- the seed image ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_a_seed_that_is_not_an_image(host: Host, world: Path, seed: SeedFrame, data: bytes) -> None:
    """A seed Pillow cannot read is InvalidRequest naming the seed; the model stays free."""
    with pytest.raises(InvalidRequest, match="the seed image is not an image") as caught:
        host.session(spec(world), seed=SeedFrame(image=data))
    assert caught.value.status == 422
    assert caught.value.hint == "send PNG or JPEG bytes"
    with host.session(spec(world), seed=seed) as session:
        assert session.step().frame_id == 0


@pytest.mark.parametrize(
    ("width", "height", "media"),
    [(200, 100, "PNG"), (31, 77, "JPEG"), (48, 32, "JPEG"), (1, 1, "PNG")],
)
def test_a_seed_of_another_size_is_fitted_to_the_model(
    host: Host, world: Path, width: int, height: int, media: str
) -> None:
    """Any seed is scaled and cropped to the model's 48x32; the frames are that size."""
    media_type = "image/png" if media == "PNG" else "image/jpeg"
    seed = SeedFrame(image=image(width, height, media), media_type=media_type)
    with host.session(spec(world), seed=seed) as session:
        assert (session.info.width, session.info.height) == (48, 32)
        batch = session.step()
    assert (batch.width, batch.height) == (48, 32)
    assert pixels(batch.frames[0]).shape == (32, 48, 3)


# -- control input ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, -1, 255, 300])
def test_key_codes_outside_1_to_254_are_refused(code: int) -> None:
    """Virtual-key codes run from 1 to 254: anything else fails validation."""
    with pytest.raises(ValidationError, match="buttons"):
        ControlInput(buttons=frozenset({code}))
    assert ControlInput(buttons=frozenset({1, 254})).buttons == {1, 254}


@pytest.mark.parametrize(
    "fields",
    [{"scroll": 2}, {"mouse_dx": float("nan")}, {"mouse_dy": float("inf")}],
    ids=["scroll", "nan", "inf"],
)
def test_control_values_out_of_range_are_refused(fields: dict[str, JsonValue]) -> None:
    """Scroll is -1, 0 or 1; mouse deltas are finite."""
    with pytest.raises(ValidationError):
        ControlInput.model_validate(fields)


# -- the model folder ---------------------------------------------------------------------------


def test_not_a_model_folder(host: Host, tmp_path: Path) -> None:
    """A file, an empty folder or a folder without weights: InvalidModel saying what is missing."""
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"\x00" * 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.yaml").write_text(WORLD_ENGINE_CONFIG, encoding="utf-8")
    tiny_no_weights = tmp_path / "tiny-no-weights"
    tiny_no_weights.mkdir()
    (tiny_no_weights / CONFIG_FILE).write_text("{}", encoding="utf-8")
    cases = [
        (a_file, "is not a folder"),
        (empty, r"has no config\.yaml"),
        (no_weights, r"has no model\.safetensors"),
        (tiny_no_weights, r"has no model\.safetensors"),
    ]
    for folder, message in cases:
        with pytest.raises(InvalidModel, match=message) as caught:
            host.load(spec(folder))
        assert caught.value.status == 422
        assert caught.value.hint is not None
    with pytest.raises(SourceNotFound):
        host.load(spec(tmp_path / "nowhere"))


@pytest.mark.skipif(_probe.world_engine_installed(), reason="world_engine is installed here")
def test_a_world_engine_model_without_world_engine(host: Host, tmp_path: Path) -> None:
    """A Waypoint-like folder needs world_engine: PluginUnavailable with the git install command."""
    folder = tmp_path / "waypoint"
    folder.mkdir()
    (folder / "config.yaml").write_text(WORLD_ENGINE_CONFIG, encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(PluginUnavailable, match="world_engine is not installed") as caught:
        host.load(spec(folder))
    assert caught.value.status == 409
    assert caught.value.hint is not None
    assert _probe.WORLD_ENGINE_INSTALL in caught.value.hint
    assert "git+https://github.com/Overworldai/world_engine.git" in caught.value.hint


# -- load options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"colour": 1},
        {"device": "tpu"},
        {"dtype": "int3"},
        {"quant": ""},
        {"config_overrides": 5},
        {"warmup": "sometimes"},
    ],
    ids=["unknown", "device", "dtype", "empty-quant", "overrides-type", "warmup"],
)
def test_bad_options_are_invalid_options(
    host: Host, world: Path, options: dict[str, JsonValue]
) -> None:
    """Options the plugin does not take, or values it cannot use: InvalidOptions (422)."""
    with pytest.raises(InvalidOptions) as caught:
        host.load(spec(world, **options))
    assert caught.value.status == 422


def test_unknown_options_name_the_accepted_ones(host: Host, world: Path) -> None:
    """The hint of an unknown option lists every option the plugin takes."""
    with pytest.raises(InvalidOptions, match="colour") as caught:
        host.load(spec(world, colour=1))
    assert caught.value.hint is not None
    for name in ("config_overrides", "device", "dtype", "quant"):
        assert name in caught.value.hint


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quant": "intw8a8"}, "no quantisation"),
        ({"quant": "nvfp4", "device": "cpu"}, "no quantisation"),
        ({"config_overrides": {"n_frames": 1}}, "n_frames is 1"),
        ({"config_overrides": {"n_frames": 0}}, "n_frames is 0"),
        ({"config_overrides": {"context": 9}}, r"lacks: \['context'\]"),
    ],
    ids=["quant", "quant-cpu", "n_frames-1", "n_frames-0", "unknown-override"],
)
def test_options_the_model_cannot_honour_are_4xx(
    host: Host, world: Path, options: dict[str, JsonValue], message: str
) -> None:
    """quant on the tiny model, a context without room after the seed, an unknown config key:
    InvalidOptions with a hint, never a 500, and no device thread left behind.
    """
    before = device_threads()
    with pytest.raises(InvalidOptions, match=message) as caught:
        host.load(spec(world, **options))
    assert caught.value.status == 422
    assert caught.value.hint is not None
    assert device_threads() == before


def test_a_load_refused_for_its_options_leaves_the_name_free(host: Host, world: Path) -> None:
    """After a refused load the same model loads with good options and opens a session."""
    with pytest.raises(MotorpoolError):
        host.load(spec(world, config_overrides={"n_frames": 1}))
    info = host.load(spec(world, config_overrides={"n_frames": 2}))
    assert info.details["n_frames"] == 2
    with host.session(info.id, seed=SeedFrame(image=image(48, 32))) as session:
        assert session.info.max_frames == 1
        batches = [session.step() for _ in range(3)]
    assert [b.reset for b in batches] == [None, "auto", "auto"]


def test_a_config_that_is_not_a_session_config_is_refused() -> None:
    """SessionConfig checks its own fields: quality 1-100, a cap of 0.1-1000 fps, a record path."""
    bad = (
        {"jpeg_quality": 0},
        {"fps_cap": 0},
        {"fps_cap": 1e-300},
        {"record_path": ""},
        {"speed": 2},
    )
    for fields in bad:
        with pytest.raises(ValidationError):
            SessionConfig.model_validate(fields)


def test_a_load_that_fails_leaves_no_device_thread(host: Host, world: Path) -> None:
    """Weights that do not fit the config fail the load; its device thread ends with it."""
    before = {t.ident for t in threading.enumerate() if t.name.startswith("world-engine")}
    with pytest.raises(MotorpoolError):
        host.load(spec(world, config_overrides={"channels": 4}))
    after = {t.ident for t in threading.enumerate() if t.name.startswith("world-engine")}
    assert after <= before
