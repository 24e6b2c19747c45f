"""motorpool's MLX engine: text completion and chat through mlx-lm.

Runs on Apple silicon (Metal) and on Linux (MLX's CPU build). Importing this module is
cheap: mlx, mlx-lm and transformers are imported in ``motorpool_load``, the tiny model
builder and the deep probe, never here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from motorpool import hookimpl
from motorpool.engine import Context, LoadedModel, ResolvedSource, TinyModel
from motorpool.errors import InvalidModel, InvalidOptions, UnsupportedCapability
from motorpool.textgen import stream_text
from motorpool.types import (
    ChatRequest,
    CompletionRequest,
    GenerationRequest,
    ModelSpec,
    ProbeReport,
    StreamEvent,
)
from pydantic import JsonValue

from motorpool_mlx import _probe
from motorpool_mlx._folder import CONFIG, WEIGHTS_GLOB, ModelFolder, has_architecture, read_folder
from motorpool_mlx._options import DEFAULT_CONTEXT, MlxOptions

if TYPE_CHECKING:
    from motorpool_mlx._engine import MlxModel

PLUGIN = "mlx"


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    return _probe.probe(deep)


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    if path is None:  # a hub repository not downloaded yet: MLX conversions say so
        return 70 if "mlx" in spec.source.lower() else None
    if not (path / CONFIG).is_file() or not any(path.glob(WEIGHTS_GLOB)):
        return None
    try:
        folder = read_folder(path)
    except InvalidModel:
        return None
    if folder.quantization is not None and "bits" in folder.quantization:
        return 85  # saved by mlx_lm.convert: made for MLX
    return 60 if has_architecture(folder.model_type) else 10


@hookimpl
def motorpool_tiny_model(directory: Path) -> TinyModel | None:
    engine_missing = any(
        importlib.util.find_spec(name) is None for name in ("mlx", "mlx_lm", "tokenizers")
    )
    if engine_missing or not _probe.probe(deep=False).ready:
        return None
    from motorpool_mlx.tiny import build_model  # noqa: PLC0415 - imports mlx to write weights

    path = build_model(directory / "tiny-llama")
    return TinyModel(
        spec=ModelSpec(plugin=PLUGIN, source=str(path)),
        request=ChatRequest.model_validate(
            {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8}
        ),
    )


@hookimpl
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    options = source.options(MlxOptions)
    folder = read_folder(source.path)
    return estimate_memory(folder, options)


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[MlxModel]:
    options = source.options(MlxOptions)
    folder = read_folder(source.path)
    check_options(folder, options)

    def load() -> MlxModel:
        from motorpool_mlx import _engine  # noqa: PLC0415 - imports mlx, mlx-lm and transformers

        return _engine.load(folder, options)

    model = context.load_uninterruptible(folder.path.name, load)
    quantization = folder.quantization
    bits = options.quantize_bits or (quantization.get("bits") if quantization else None)
    return LoadedModel(
        handle=model,
        capabilities=_probe.CAPABILITIES,
        memory_bytes=model.weights_bytes() + kv_cache_bytes(folder, options),
        max_concurrency=1,  # one generation at a time keeps MLX's memory and speed predictable
        details=_details(folder, options, model, bits),
    )


@hookimpl
def motorpool_unload(model: LoadedModel[MlxModel]) -> None:
    model.handle.close()


@hookimpl
def motorpool_stream(
    model: LoadedModel[MlxModel], request: GenerationRequest, context: Context
) -> Iterator[StreamEvent]:
    if not isinstance(request, CompletionRequest | ChatRequest):
        raise UnsupportedCapability(f"mlx generates text, not {request.kind}")
    engine = model.handle
    tokens = engine.prompt(request)
    room = engine.max_new_tokens(tokens)
    limit = request.max_tokens if room is None else min(request.max_tokens, room)
    sampling = engine.sampling(request.sampling)
    return stream_text(
        engine.pieces(tokens, sampling, limit),
        request,
        context,
        prompt_tokens=len(tokens),
        max_tokens=room,
        peak_memory=engine.peak_memory,
    )


def check_options(folder: ModelFolder, options: MlxOptions) -> None:
    """Refuse options that cannot apply to this folder, before anything is loaded."""
    code = folder.config.get("model_file")
    if code is not None and not options.trust_remote_code:
        raise InvalidModel(
            f"{folder.path.name} builds its architecture with its own Python code ({code}), "
            "which motorpool does not run unless told to",
            hint="if you trust this model, load it with the option trust_remote_code = true",
        )
    quantization = folder.quantization
    if options.quantize_bits is not None and quantization is not None:
        raise InvalidOptions(
            f"{folder.path.name} is already quantised ({quantization.get('bits', '?')} bits); "
            "quantize_bits applies to full- or half-precision weights",
            hint="leave quantize_bits out, or load the unquantised model",
        )
    context = folder.context_length
    if options.max_kv_size is not None and context is not None and options.max_kv_size > context:
        raise InvalidOptions(
            f"max_kv_size {options.max_kv_size} is over this model's context of {context}",
            hint=f"use a max_kv_size of at most {context}, or leave it out",
        )


def kv_cache_bytes(folder: ModelFolder, options: MlxOptions) -> int:
    """The KV cache of ``max_kv_size`` tokens, else of 4096 (capped at the model's context)."""
    per_token = folder.kv_bytes_per_token() or 0
    tokens = options.max_kv_size or min(DEFAULT_CONTEXT, folder.context_length or DEFAULT_CONTEXT)
    return per_token * tokens


def estimate_memory(folder: ModelFolder, options: MlxOptions) -> int:
    """The weights (smaller when quantised on load) + the KV cache."""
    weights = folder.weights_bytes
    bits = options.quantize_bits
    if bits is not None:
        # Affine quantisation stores a 16-bit scale and bias per group beside the weights.
        stored_bits = 32 if folder.float32 else 16
        weights = int(weights * (bits + 32 / options.quantize_group_size) / stored_bits)
    return weights + kv_cache_bytes(folder, options)


def _details(
    folder: ModelFolder, options: MlxOptions, model: MlxModel, bits: JsonValue
) -> dict[str, JsonValue]:
    return {
        "folder": folder.path.name,
        "architecture": folder.model_type,
        "context_length": folder.context_length,
        "quantization_bits": bits,
        "max_kv_size": options.max_kv_size,
        "chat_template": model.has_chat_template,
        "device": model.device,
    }
