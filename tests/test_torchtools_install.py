"""``torchtools.torch_install_command``: the torch build each kind of machine needs."""

from __future__ import annotations

import pytest
from motorpool import torchtools
from motorpool.types import Accelerator


@pytest.mark.parametrize(
    ("system", "accelerators", "command"),
    [
        ("linux", {Accelerator.CUDA}, torchtools.TORCH_CUDA),
        ("linux", {Accelerator.ROCM}, torchtools.TORCH_ROCM),
        ("linux", set(), torchtools.TORCH_CPU),
        ("linux", {Accelerator.CUDA, Accelerator.ROCM}, torchtools.TORCH_CUDA),
        ("win32", {Accelerator.CUDA}, torchtools.TORCH_WINDOWS_CUDA),
        ("win32", set(), torchtools.TORCH_DEFAULT),
        ("darwin", {Accelerator.METAL}, torchtools.TORCH_DEFAULT),
    ],
)
def test_each_machine_gets_its_build(
    system: str, accelerators: set[Accelerator], command: str
) -> None:
    assert torchtools.torch_install_command(system, frozenset(accelerators)) == command


def test_the_cpu_build_comes_from_pytorchs_cpu_index() -> None:
    assert torchtools.TORCH_CPU.endswith("--index-url https://download.pytorch.org/whl/cpu")
    assert "cpu" not in torchtools.TORCH_CUDA


def test_this_machine_gets_one_of_the_commands() -> None:
    known = {
        torchtools.TORCH_CUDA,
        torchtools.TORCH_CPU,
        torchtools.TORCH_ROCM,
        torchtools.TORCH_WINDOWS_CUDA,
        torchtools.TORCH_DEFAULT,
    }
    assert torchtools.torch_install_command() in known
