"""What this machine can run, and the install command that fits it.

The quick probe never imports ``llama_cpp`` (which loads its native library): it finds
the package with ``importlib`` and tells the build from the backend libraries shipped
beside it (``libggml-cuda.so``, ``libggml-metal.dylib``, ...).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from motorpool.hardware import hardware_report, likely_accelerators
from motorpool.types import Accelerator, Capability, Device, MissingDependency, ProbeReport

CAPABILITIES = frozenset({Capability.COMPLETION, Capability.CHAT})
FORMATS = ("gguf",)
PACKAGE = "llama-cpp-python"

# The CMake switch that builds llama.cpp for each accelerator.
_CMAKE_FLAG = {
    Accelerator.CUDA: "-DGGML_CUDA=on",
    Accelerator.ROCM: "-DGGML_HIP=on",
    Accelerator.VULKAN: "-DGGML_VULKAN=on",
}
_BACKEND_LIBRARIES = {
    "cuda": Accelerator.CUDA,
    "hip": Accelerator.ROCM,
    "metal": Accelerator.METAL,
    "vulkan": Accelerator.VULKAN,
}


def install_command(accelerator: Accelerator | None, *, reinstall: bool = False) -> str:
    """The pip command that builds llama-cpp-python for this accelerator."""
    flags = "--force-reinstall --no-cache-dir " if reinstall else ""
    cmake = _CMAKE_FLAG.get(accelerator) if accelerator is not None else None
    prefix = f'CMAKE_ARGS="{cmake}" ' if cmake else ""
    return f"{prefix}pip install {flags}{PACKAGE}"


def installed_backends() -> frozenset[Accelerator] | None:
    """GPU backends of the installed build (empty: CPU only); ``None`` when not installed."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    found: set[Accelerator] = set()
    for library in (Path(spec.origin).parent / "lib").glob("*ggml-*"):
        backend = library.name.removeprefix("lib").removeprefix("ggml-").split(".")[0]
        if backend in _BACKEND_LIBRARIES:
            found.add(_BACKEND_LIBRARIES[backend])
    return frozenset(found)


def probe(deep: bool) -> ProbeReport:
    """The plugin's probe report; ``deep`` imports llama_cpp to ask the build itself."""
    machine = likely_accelerators()
    gpu = next((a for a in (Accelerator.CUDA, Accelerator.ROCM) if a in machine), None)
    backends = installed_backends()
    if backends is None:
        return ProbeReport(
            ready=False,
            capabilities=CAPABILITIES,
            formats=FORMATS,
            missing=(
                MissingDependency(
                    package=PACKAGE,
                    install=install_command(gpu),
                    reason="llama.cpp's Python binding is not installed",
                ),
            ),
        )
    notes: list[str] = []
    if gpu is not None and gpu not in backends:
        notes.append(
            f"this llama.cpp build is CPU-only but the machine has {gpu.value.upper()}; "
            f"for GPU offload run: {install_command(gpu, reinstall=True)}"
        )
    devices = [Device(accelerator=Accelerator.CPU, name="cpu")]
    if deep:
        from motorpool_llama_cpp import _engine  # noqa: PLC0415 - the deep probe may import

        notes.append(f"build: {_engine.system_info()}")
        notes.append(f"GPU offload supported: {_engine.gpu_offload_supported()}")
        devices += [d for d in hardware_report().accelerators if d.accelerator in backends]
    else:
        devices += [Device(accelerator=a, name=a.value) for a in sorted(backends & machine)]
    return ProbeReport(
        ready=True,
        capabilities=CAPABILITIES,
        formats=FORMATS,
        devices=tuple(devices),
        engine_version=importlib.metadata.version(PACKAGE),
        notes=tuple(notes),
    )
