"""motorpool.torchtools: device, dtype and placement of PyTorch models, on this machine's torch.

Skipped where torch is not installed (the core itself never needs it). The placement
tests use a real tiny Stable Diffusion pipeline when the diffusers plugin is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from motorpool.errors import InvalidOptions
from motorpool.torchtools import (
    TorchOptions,
    missing_torch,
    module_bytes,
    peak_memory,
    place,
    planned_dtype_bytes,
    release_memory,
    reset_peak_memory,
    resolve_device,
    resolve_dtype,
    torch_build,
    torch_devices,
    torch_report,
)
from motorpool.types import Accelerator
from pydantic import ValidationError

torch = pytest.importorskip("torch")
needs_cpu_only = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(),
    reason="checks what a machine without GPU resolves to",
)


def test_importing_torchtools_does_not_import_torch() -> None:
    code = "import sys, motorpool.torchtools; print(sys.modules.get('torch') is None)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:1"])
def test_device_names_are_accepted(device: str) -> None:
    assert TorchOptions(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", "cuda:0 "])
def test_other_device_names_are_refused(device: str) -> None:
    with pytest.raises(ValidationError, match="device"):
        TorchOptions(device=device)


@needs_cpu_only
def test_auto_resolves_to_the_cpu_in_float32() -> None:
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype("float16", "mps") is torch.float16
    assert resolve_dtype("auto", "mps") is torch.float16


@needs_cpu_only
@pytest.mark.parametrize(
    ("device", "message", "hint"),
    [
        ("cuda", "device cuda is not available", "install a CUDA build of torch"),
        ("cuda:1", "device cuda:1 is not available", 'use device = "auto" or "cpu"'),
        ("mps", "device mps is not available: it needs Apple silicon", '"auto" or "cpu"'),
    ],
)
def test_missing_devices_are_invalid_options(device: str, message: str, hint: str) -> None:
    with pytest.raises(InvalidOptions, match=message) as raised:
        resolve_device(device)
    assert raised.value.hint is not None
    assert hint in raised.value.hint


def test_planned_dtype_bytes_needs_no_torch() -> None:
    assert planned_dtype_bytes("cpu", "auto") == 4
    assert planned_dtype_bytes("cuda", "auto") == 2
    assert planned_dtype_bytes("mps", "auto") == 2
    assert planned_dtype_bytes("auto", "bfloat16") == 2
    assert planned_dtype_bytes("cuda", "float32") == 4
    code = (
        "import sys, json; from motorpool.torchtools import planned_dtype_bytes\n"
        "print(json.dumps([planned_dtype_bytes('auto', 'auto'), 'torch' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    auto, imported = json.loads(done.stdout)
    assert not imported
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert auto == 4


def test_devices_memory_and_peaks_on_the_cpu() -> None:
    devices = torch_devices()
    assert devices[0].accelerator is Accelerator.CPU
    assert devices[0].memory_bytes is not None
    assert devices[0].memory_bytes > 0
    reset_peak_memory("cpu")
    assert peak_memory("cpu") is None
    release_memory("cpu")
    layer = torch.nn.Linear(10, 3)
    assert module_bytes([layer, "not a module", None]) == (10 * 3 + 3) * 4


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tiny = pytest.importorskip("motorpool_diffusers_image.tiny")
    pipelines = pytest.importorskip("diffusers.pipelines.pipeline_utils")
    folder: Path = tiny.build_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd")
    return pipelines.DiffusionPipeline.from_pretrained(str(folder))


def test_place_applies_vae_slicing_and_tiling(pipeline: Any) -> None:
    vae = pipeline.vae
    options = TorchOptions(vae_slicing=True, vae_tiling=True, cpu_offload=True)
    offload = place(pipeline, vae, options, "cpu")
    assert offload is False  # offloading to the CPU from the CPU means nothing
    assert vae.use_slicing
    assert vae.use_tiling
    assert next(vae.parameters()).device.type == "cpu"


@pytest.mark.parametrize("option", ["vae_slicing", "vae_tiling"])
def test_place_refuses_slicing_without_a_vae(pipeline: Any, option: str) -> None:
    with pytest.raises(InvalidOptions, match=f"{option}: this pipeline's VAE") as raised:
        place(pipeline, None, TorchOptions.model_validate({option: True}), "cpu")
    assert raised.value.hint == f"leave {option} out"


def test_torch_report_without_and_with_importing_torch() -> None:
    assert torch_build() == torch.__version__
    assert missing_torch() is None
    quick = torch_report(deep=False)
    assert quick.devices[0].accelerator is Accelerator.CPU
    assert f"torch {torch.__version__}" in quick.notes
    deep = torch_report(deep=True)
    assert deep.devices[0].memory_bytes is not None
    device = resolve_device("auto")
    assert any(note.startswith(f"default device: {device} (") for note in deep.notes)
