"""Shared fixtures of motorpool's tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import uv

# -------------------------------------------------------------------------------------------
# Deliberately broken plugin packages (tests/plugins/broken)
# -------------------------------------------------------------------------------------------

BROKEN_PLUGINS_DIR = Path(__file__).parent / "plugins" / "broken"
"""One real package per way a plugin can break; see each package's module docstring."""


@pytest.fixture(scope="session")
def broken_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the broken plugin packages, installed, to put on ``sys.path``.

    They go into a ``--target`` folder, never into the venv, so only the tests that
    ask for them see their entry points. ``--no-deps`` keeps the missing dependency
    of ``motorpool-missing-dependency`` missing (and motorpool comes from the venv).
    """
    target = tmp_path_factory.mktemp("broken-plugins")
    packages = sorted(
        str(p) for p in BROKEN_PLUGINS_DIR.iterdir() if (p / "pyproject.toml").is_file()
    )
    command = [
        uv.find_uv_bin(),
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--python",
        sys.executable,
        "--target",
        str(target),
        *packages,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"could not install the broken test plugins ({' '.join(command)}):\n{done.stderr}"
        )
    return target
