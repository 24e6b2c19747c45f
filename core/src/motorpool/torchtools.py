"""Device, dtype and memory handling shared by the plugins that run PyTorch models.

The diffusers image and video plugins load their pipelines the same way: a device
(``auto`` = CUDA, then Apple's MPS, then the CPU), a dtype (``auto`` = bfloat16 or
float16 on an accelerator, float32 on the CPU), optional model CPU offload and VAE
slicing / tiling. :class:`TorchOptions` declares those load options once; plugins
extend it with their own.

Importing this module never imports torch: every function that needs it imports it
when called (a plugin's quick probe and memory estimate use the rest).
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import io
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field

from motorpool.engine import Context
from motorpool.errors import InvalidOptions, InvalidRequest
from motorpool.hardware import likely_accelerators, physical_memory
from motorpool.types import Accelerator, Capability, Device, MissingDependency, ProbeReport

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

DtypeName = Literal["auto", "float32", "float16", "bfloat16"]
FloatDtypeName = Literal["float32", "float16", "bfloat16"]
"""A floating-point dtype by name (a ``dtype`` option once ``auto`` is resolved)."""
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
DeviceName = Annotated[str, Field(pattern=DEVICE_PATTERN)]
"""``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""

DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


class TorchOptions(BaseModel):
    """Where and in which precision a PyTorch model runs: load options plugins extend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: DeviceName = "auto"
    """``auto`` picks CUDA, then MPS (Apple silicon), then the CPU."""
    dtype: DtypeName = "auto"
    """``auto``: bfloat16 on CUDA GPUs that support it (float16 on older ones and on
    MPS), float32 on the CPU."""
    cpu_offload: bool = False
    """Keep the weights in RAM and move each model to the GPU only while it runs
    (``enable_model_cpu_offload``): less GPU memory, some speed lost. Ignored on the CPU."""
    vae_slicing: bool = False
    """Decode a batch of images one at a time: less memory for several images."""
    vae_tiling: bool = False
    """Decode large images in overlapping tiles: less memory for large sizes."""


class SupportsSlicing(Protocol):
    """A VAE that can decode in slices and in tiles (diffusers' autoencoders)."""

    def enable_slicing(self) -> None:
        """Decode a batch one sample at a time."""
        ...

    def enable_tiling(self) -> None:
        """Decode in overlapping tiles."""
        ...


class Placeable(Protocol):
    """What :func:`place` needs of a pipeline (a diffusers ``DiffusionPipeline``)."""

    def to(self, device: str) -> object:
        """Move every model of the pipeline to ``device``."""
        ...

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str = "cuda") -> None:
        """Move each model to ``device`` only while it runs."""
        ...


# -- resolving options (these import torch) --------------------------------------------------


def resolve_device(requested: str) -> str:
    """The torch device for a ``device`` option; raises ``InvalidOptions`` if it is absent."""
    import torch  # noqa: PLC0415 - the caller is loading a model: torch is needed anyway

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if requested == "cpu":
        return requested
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise InvalidOptions(
                "device mps is not available: it needs Apple silicon and a torch build with MPS",
                hint='use device = "auto" or "cpu"',
            )
        return requested
    if not torch.cuda.is_available():
        build = torch.__version__
        raise InvalidOptions(
            f"device {requested} is not available: "
            + (
                f"this torch ({build}) is a CPU-only build"
                if torch.version.cuda is None
                else "no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES)"
            ),
            hint='use device = "auto" or "cpu", or install a CUDA build of torch',
        )
    index = _CUDA_INDEX.match(requested)
    count = torch.cuda.device_count()
    if index is not None and int(index.group(1)) >= count:
        raise InvalidOptions(
            f"device {requested} does not exist: this machine has {count} CUDA device(s)",
            hint=f"use cuda:0 to cuda:{count - 1}",
        )
    return requested


def resolve_dtype(requested: DtypeName, device: str) -> torch.dtype:
    """The torch dtype for a ``dtype`` option on a resolved device."""
    import torch  # noqa: PLC0415

    cuda = device.startswith("cuda")
    if requested == "auto":
        if cuda:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32
    if requested == "bfloat16" and cuda and not torch.cuda.is_bf16_supported():
        raise InvalidOptions(
            f"this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16 support",
            hint='use dtype = "float16" or "auto"',
        )
    return torch_dtype(requested)


def torch_dtype(name: FloatDtypeName) -> torch.dtype:
    """The torch dtype named ``name`` (``float32``, ``float16`` or ``bfloat16``)."""
    import torch  # noqa: PLC0415

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def planned_dtype_bytes(device: str, dtype: DtypeName) -> int:
    """Bytes per weight the options will give, guessed without importing torch.

    For memory estimates before a load: an explicit dtype is exact; ``auto`` is 2 bytes
    when the model will likely run on a GPU (``cuda``/``mps``, or ``auto`` on a machine
    with CUDA or Apple silicon and a torch build that can use it), else 4.
    """
    if dtype != "auto":
        return DTYPE_BYTES[dtype]
    if device == "cpu":
        return DTYPE_BYTES["float32"]
    if device != "auto":
        return DTYPE_BYTES["float16"]
    gpu = likely_accelerators() & {Accelerator.CUDA, Accelerator.METAL}
    if Accelerator.CUDA in gpu and _torch_is_cpu_only():
        gpu = gpu - {Accelerator.CUDA}
    return DTYPE_BYTES["float16"] if gpu else DTYPE_BYTES["float32"]


def _torch_is_cpu_only() -> bool:
    """Whether the installed torch is a CPU build (``2.x.y+cpu``), read from its metadata."""
    build = torch_build()
    return build is None or build.endswith("+cpu")


def torch_installed() -> bool:
    """Whether torch can be imported here (found, not imported)."""
    return importlib.util.find_spec("torch") is not None


def torch_build() -> str | None:
    """The installed torch's version (``2.13.0+cpu``) from its metadata; ``None`` if absent."""
    if not torch_installed():
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


# -- installing torch ---------------------------------------------------------------------------

TORCH_CUDA = "pip install torch"
"""Linux x86-64 with an NVIDIA GPU: PyPI's torch is the CUDA build."""
TORCH_CPU = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
"""Linux without a GPU: the CPU build (a few hundred MB instead of several GB)."""
TORCH_ROCM = "pip install torch --index-url https://download.pytorch.org/whl/rocm6.4"
TORCH_WINDOWS_CUDA = "pip install torch --index-url https://download.pytorch.org/whl/cu128"
TORCH_DEFAULT = "pip install torch"
"""macOS (MPS on Apple silicon) and Windows without a GPU."""


def torch_install_command(
    system: str = sys.platform, accelerators: frozenset[Accelerator] | None = None
) -> str:
    """The pip command that installs the torch build fitting a machine (this one by default).

    Found without importing torch, for a plugin's quick probe to name when torch is missing.
    """
    found = likely_accelerators() if accelerators is None else accelerators
    if system.startswith("linux"):
        if Accelerator.CUDA in found:
            return TORCH_CUDA
        return TORCH_ROCM if Accelerator.ROCM in found else TORCH_CPU
    if system == "win32" and Accelerator.CUDA in found:
        return TORCH_WINDOWS_CUDA
    return TORCH_DEFAULT


def missing_torch() -> MissingDependency | None:
    """What to install when torch is missing (the build for this machine), else ``None``."""
    if torch_build() is not None:
        return None
    return MissingDependency(
        package="torch",
        install=torch_install_command(),
        reason="PyTorch, the build that fits this machine's accelerator",
    )


@dataclass(frozen=True, slots=True)
class TorchReport:
    """What a plugin's probe says about torch: the devices it can use, and notes."""

    devices: tuple[Device, ...]
    notes: tuple[str, ...]


def torch_report(deep: bool) -> TorchReport:
    """The devices and notes of a probe, for an installed torch.

    ``deep=False`` imports nothing: the CPU, CUDA when the machine has an NVIDIA GPU and
    the build is not a CPU one, MPS on Apple silicon. ``deep=True`` asks torch
    (:func:`torch_devices`) and names the default device and dtype. Either way a CPU-only
    build on a machine with an NVIDIA GPU gets a note with the command that fixes it.
    """
    build = torch_build() or "?"
    notes = [f"torch {build}"]
    accelerators = likely_accelerators()
    cpu_only = build.endswith("+cpu")
    if deep:
        devices = torch_devices()
        device = resolve_device("auto")
        dtype = str(resolve_dtype("auto", device)).removeprefix("torch.")
        notes.append(f"default device: {device} ({dtype})")
    else:
        devices = [Device(accelerator=Accelerator.CPU, name="cpu")]
        if Accelerator.CUDA in accelerators and not cpu_only:
            devices.append(Device(accelerator=Accelerator.CUDA, name="cuda"))
        if Accelerator.METAL in accelerators:
            devices.append(Device(accelerator=Accelerator.METAL, name="mps"))
    if cpu_only and Accelerator.CUDA in accelerators:
        notes.append(
            f"this torch ({build}) is CPU-only but the machine has an NVIDIA GPU; for the GPU: "
            f"{TORCH_CUDA} --force-reinstall"
        )
    return TorchReport(devices=tuple(devices), notes=tuple(notes))


def torch_probe(
    deep: bool,
    *,
    capabilities: frozenset[Capability],
    formats: tuple[str, ...],
    missing: Sequence[MissingDependency],
    engine: str,
) -> ProbeReport:
    """The probe report of a plugin that runs ``engine`` (a distribution name) on torch.

    Not ready while anything is ``missing`` (torch itself: :func:`missing_torch`); else
    ready, with :func:`torch_report`'s devices and notes and ``engine``'s version.
    """
    if missing:
        return ProbeReport(
            ready=False, capabilities=capabilities, formats=formats, missing=tuple(missing)
        )
    torch = torch_report(deep)
    return ProbeReport(
        ready=True,
        capabilities=capabilities,
        formats=formats,
        devices=torch.devices,
        engine_version=importlib.metadata.version(engine),
        notes=torch.notes,
    )


# -- placing a pipeline -----------------------------------------------------------------------


def place(pipeline: Placeable, vae: object, options: TorchOptions, device: str) -> bool:
    """Put a loaded pipeline on ``device`` as the options say; return whether it offloads.

    ``vae`` is the pipeline's autoencoder (``None`` if it has none); slicing and tiling
    options on a VAE that cannot do them raise ``InvalidOptions``.
    """
    for wanted, method in ((options.vae_slicing, "slicing"), (options.vae_tiling, "tiling")):
        if wanted and not hasattr(vae, f"enable_{method}"):
            raise InvalidOptions(
                f"vae_{method}: this pipeline's VAE ({type(vae).__name__}) cannot decode in "
                f"{method}s",
                hint=f"leave vae_{method} out",
            )
    if options.vae_slicing:
        _slicing(vae).enable_slicing()
    if options.vae_tiling:
        _slicing(vae).enable_tiling()
    offload = options.cpu_offload and device != "cpu"
    if offload:
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)
    return offload


def _slicing(vae: object) -> SupportsSlicing:
    return cast("SupportsSlicing", vae)  # place() checked that it has the method


# -- devices and memory -------------------------------------------------------------------------


def torch_devices() -> list[Device]:
    """The devices this torch build can use: the CPU, each CUDA GPU (with its memory), MPS."""
    import torch  # noqa: PLC0415

    found = [Device(accelerator=Accelerator.CPU, name="cpu", memory_bytes=physical_memory())]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            _free, total = torch.cuda.mem_get_info(index)
            found.append(
                Device(
                    accelerator=Accelerator.ROCM if torch.version.hip else Accelerator.CUDA,
                    name=f"cuda:{index} {torch.cuda.get_device_name(index)}",
                    memory_bytes=total,
                )
            )
    if torch.backends.mps.is_available():
        found.append(
            Device(
                accelerator=Accelerator.METAL,
                name="mps",
                memory_bytes=int(torch.mps.recommended_max_memory()),
            )
        )
    return found


def module_bytes(modules: Iterable[object]) -> int:
    """Bytes of the parameters and buffers of the ``torch.nn.Module`` objects among ``modules``."""
    import torch  # noqa: PLC0415

    total = 0
    for module in modules:
        if isinstance(module, torch.nn.Module):
            tensors = [*module.parameters(), *module.buffers()]
            total += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    return total


def reset_peak_memory(device: str) -> None:
    """Start counting the peak memory of ``device`` afresh (CUDA only; no-op elsewhere)."""
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> int | None:
    """Peak bytes allocated on ``device`` since :func:`reset_peak_memory` (CUDA).

    On MPS the bytes it holds now; ``None`` on the CPU (no per-request figure there).
    """
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device))
    if device == "mps":
        return int(torch.mps.driver_allocated_memory())
    return None


def release_memory(device: str) -> None:
    """Give cached accelerator memory back after a model was dropped."""
    import torch  # noqa: PLC0415

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


# -- running a diffusers pipeline -------------------------------------------------------------

MAX_INPUT_PIXELS = 8192 * 8192
"""The largest input image (image-to-image, a video's first frame) a request may send."""


class StopDenoising(Exception):
    """Raised from the step callback of a pipeline that has no interrupt flag."""


class DenoiseSteps:
    """A diffusers ``callback_on_step_end``: one progress event per step, cancel between steps.

    A pipeline with an interrupt flag (``interruptible``) is stopped the documented way:
    the flag makes its loop skip the remaining steps. Any other raises
    :class:`StopDenoising`, which the caller turns into ``Cancelled``.
    """

    def __init__(self, context: Context, started: float, *, interruptible: bool) -> None:
        self._context, self._started, self._interruptible = context, started, interruptible
        self.first: float | None = None
        """Seconds from ``started`` to the end of the first step."""

    def __call__(
        self, pipeline: object, step: int, _timestep: object, tensors: dict[str, object]
    ) -> dict[str, object]:
        if self.first is None:
            self.first = time.perf_counter() - self._started
        total: object = getattr(pipeline, "num_timesteps", None)
        self._context.progress("denoise", step + 1, total if isinstance(total, int) else None)
        if self._context.cancelled:
            if not self._interruptible:
                raise StopDenoising
            setattr(pipeline, "_interrupt", True)  # noqa: B010 - diffusers has no public setter
        return tensors


def decode_image(data: bytes, what: str) -> PILImage:
    """An input image (PNG, JPEG, WebP...) as RGB; ``InvalidRequest`` naming ``what`` if not."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - diffusers brings Pillow

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_INPUT_PIXELS:
                raise InvalidRequest(
                    f"{what} is {width}x{height}, over the limit of {MAX_INPUT_PIXELS} pixels"
                )
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(
            f"{what} is not an image this plugin can read: {exc}",
            hint="send PNG or JPEG bytes",
        ) from exc
