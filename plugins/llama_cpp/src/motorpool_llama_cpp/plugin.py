"""motorpool's llama.cpp engine: GGUF text completion and chat through llama-cpp-python.

Importing this module is cheap: ``llama_cpp`` (and its native library) is imported in
``motorpool_load`` and in the deep probe, never here.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from motorpool import hookimpl
from motorpool.engine import Context, LoadedModel, ResolvedSource, TinyModel
from motorpool.errors import Cancelled, InvalidModel, InvalidOptions, UnsupportedCapability
from motorpool.textgen import stream_text
from motorpool.types import (
    ChatRequest,
    CompletionRequest,
    GenerationRequest,
    ModelSpec,
    ProbeReport,
    StreamEvent,
)

from motorpool_llama_cpp import _probe
from motorpool_llama_cpp._gguf import GGML_BLOCKS, GGUFInfo, read_gguf
from motorpool_llama_cpp._options import DEFAULT_CONTEXT, KV_CACHE_TYPES, LlamaOptions

if TYPE_CHECKING:
    from motorpool_llama_cpp._engine import LlamaModel

PLUGIN = "llama-cpp"
SUFFIX = ".gguf"
_PROJECTOR_PREFIX = "mmproj"  # vision projectors ship beside the model; never the model
_FIRST_SHARD = "-00001-of-"


@hookimpl
def motorpool_probe(deep: bool) -> ProbeReport:
    return _probe.probe(deep)


@hookimpl
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    if path is not None:
        if path.is_file():
            return 90 if path.name.lower().endswith(SUFFIX) else None
        return 80 if path.is_dir() and any(path.rglob(f"*{SUFFIX}")) else None
    named = [spec.source, *spec.files]
    return 70 if any("gguf" in name.lower() for name in named) else None


@hookimpl
def motorpool_tiny_model(directory: Path) -> TinyModel | None:
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("tokenizers") is None:
        return None  # the tiny extra is not installed
    from motorpool_llama_cpp.tiny import build_gguf  # noqa: PLC0415 - needs the tiny extra

    path = build_gguf(directory / "tiny.gguf")
    return TinyModel(
        spec=ModelSpec(plugin=PLUGIN, source=str(path), options={"context_length": 512}),
        request=ChatRequest.model_validate(
            {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8}
        ),
    )


@hookimpl
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    options = source.options(LlamaOptions)
    info = read_gguf(gguf_file(source))
    return estimate_memory(info, options, context_length(info, options))


@hookimpl
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[LlamaModel]:
    options = source.options(LlamaOptions)
    info = read_gguf(gguf_file(source))
    length = context_length(info, options)
    check_kv_cache_type(info, options)
    context.raise_if_cancelled()
    context.progress("load", 0, 1)
    from motorpool_llama_cpp import _engine  # noqa: PLC0415 - loads llama.cpp's native library

    try:
        llama = _engine.open_llama(info, options, length)
    except (ValueError, RuntimeError) as exc:
        raise InvalidModel(
            f"llama.cpp could not load {info.path.name} "
            f"(architecture {info.architecture!r}): {exc}",
            hint="a newer llama-cpp-python may know this architecture: "
            "pip install -U llama-cpp-python",
        ) from exc
    model = _engine.LlamaModel(llama, info, options)
    if context.cancelled:  # the load itself cannot be interrupted; drop its result
        model.close()
        raise Cancelled(f"loading {info.path.name} was cancelled")
    context.progress("load", 1, 1)
    return LoadedModel(
        handle=model,
        capabilities=_probe.CAPABILITIES,
        memory_bytes=estimate_memory(info, options, length),
        max_concurrency=1,  # one llama.cpp context decodes one sequence at a time
        details={
            "file": info.path.name,
            "architecture": info.architecture,
            "context_length": model.context_length,
            "trained_context_length": info.context_length,
            "chat_template": info.chat_template is not None or options.chat_format is not None,
            "gpu_offload": _engine.gpu_offload_supported(),
        },
    )


@hookimpl
def motorpool_unload(model: LoadedModel[LlamaModel]) -> None:
    model.handle.close()


@hookimpl
def motorpool_stream(
    model: LoadedModel[LlamaModel], request: GenerationRequest, context: Context
) -> Iterator[StreamEvent]:
    if not isinstance(request, CompletionRequest | ChatRequest):
        raise UnsupportedCapability(f"llama.cpp generates text, not {request.kind}")
    engine = model.handle
    prompt = engine.prompt(request)
    return stream_text(
        engine.pieces(prompt, request.sampling),
        request,
        context,
        prompt_tokens=len(prompt.tokens),
        max_tokens=engine.max_new_tokens(prompt),
        stops=prompt.stops,
    )


def gguf_file(source: ResolvedSource) -> Path:
    """The GGUF to load: the source itself, or the one file in a folder (a hub snapshot).

    In a folder, ``spec.files`` patterns narrow the choice; of a split model
    (``-00001-of-00003.gguf``) the first shard is loaded and llama.cpp finds the rest.
    """
    path = source.path
    if path.is_file():
        return path
    patterns = source.spec.files
    candidates = [
        p
        for p in sorted(path.rglob(f"*{SUFFIX}"))
        if not p.name.lower().startswith(_PROJECTOR_PREFIX)
        and (not patterns or any(fnmatch.fnmatch(p.name, pat) for pat in patterns))
        and ("-of-" not in p.name or _FIRST_SHARD in p.name)
    ]
    if not candidates:
        raise InvalidModel(
            f"no GGUF file in {path}" + (f" matching {list(patterns)}" if patterns else "")
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:6])
        raise InvalidModel(
            f"{path} holds several GGUF files ({names}); say which one to load",
            hint="add a file pattern to the spec, e.g. files = ['*q4_k_m.gguf']",
        )
    return candidates[0]


def context_length(info: GGUFInfo, options: LlamaOptions) -> int:
    """The context to allocate: the option, else 4096 capped at the model's own."""
    trained = info.context_length
    if options.context_length is None:
        return min(DEFAULT_CONTEXT, trained) if trained else DEFAULT_CONTEXT
    if trained is not None and options.context_length > trained:
        raise InvalidOptions(
            f"context_length {options.context_length} is over this model's limit of {trained}",
            hint=f"use a context_length of at most {trained}",
        )
    return options.context_length


def check_kv_cache_type(info: GGUFInfo, options: LlamaOptions) -> None:
    """A quantised KV cache needs head sizes that its blocks divide (llama.cpp's rule)."""
    block = GGML_BLOCKS[KV_CACHE_TYPES[options.kv_cache_type][0]][0]
    uneven = [size for size in info.head_sizes if size % block]
    if uneven:
        raise InvalidOptions(
            f"kv_cache_type {options.kv_cache_type!r} stores blocks of {block} values, "
            f"which do not divide this model's attention head size of {uneven[0]}",
            hint="use kv_cache_type 'f16' (the default) for this model",
        )


def estimate_memory(info: GGUFInfo, options: LlamaOptions, length: int) -> int:
    """Weights (the file) + KV cache for the context + the logits buffer of one batch."""
    element_bytes = KV_CACHE_TYPES[options.kv_cache_type][1]
    kv_cache = info.kv_bytes_per_token(element_bytes) * length
    vocab = info.array_lengths.get("tokenizer.ggml.tokens", 0)
    logits = vocab * min(options.batch_size, length) * 4
    return info.path.stat().st_size + kv_cache + logits
