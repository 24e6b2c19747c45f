"""``motorpool play``: a world model played headless from the command line, recorded to MP4."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
from motorpool.types import SeedFrame

from tests.support import motorpool


def test_play_records_the_session_and_reports_it(
    world: Path, seed: SeedFrame, tmp_path: Path
) -> None:
    """Steps under held keys and mouse motion, written as an MP4 of every frame."""
    image = tmp_path / "seed.png"
    image.write_bytes(seed.image)
    out = tmp_path / "play.mp4"
    args = ("play", str(world), str(image), "--steps", "20", "--key", "w", "--key", "space")
    result = motorpool(*args, "--mouse", "2", "0", "-o", str(out), "--json", home=tmp_path)
    summary = json.loads(result.stdout)
    assert summary["recording"] == str(out)
    assert (summary["frames"], summary["width"], summary["height"]) == (20, 48, 32)
    assert summary["resets"] == 0
    frames = iio.imread(out, plugin="FFMPEG", index=None)
    assert frames.shape == (20, 32, 48, 3)
    assert not list(tmp_path.glob("*.partial.mp4"))
    human = motorpool(*args, "-o", str(tmp_path / "again.mp4"), home=tmp_path)
    assert f"wrote {tmp_path / 'again.mp4'}" in human.stdout
    assert "20 frames 48x32" in human.stderr


def test_play_refuses_an_unknown_key_and_a_model_without_sessions(
    seed: SeedFrame, tmp_path: Path
) -> None:
    """A key that is no key is a usage error; so is a folder no world plugin loads."""
    image = tmp_path / "seed.png"
    image.write_bytes(seed.image)
    unknown = motorpool("play", str(tmp_path), str(image), "--key", "f13x", home=tmp_path,
                        check=False)  # fmt: skip
    assert unknown.returncode == 2
    assert "is not a key" in unknown.stderr
    missing = motorpool("play", str(tmp_path / "nothing"), str(image), home=tmp_path, check=False)
    assert missing.returncode == 1
    assert "error:" in missing.stderr
    assert "Traceback" not in missing.stderr
