"""Hook specifications: the whole contract between the host and an engine plugin.

A plugin is a module (or any object) named by an entry point in the group
``motorpool.engines``. It implements some of the hooks below, marked with
``@motorpool.hookimpl``. Importing the module must stay cheap: import the engine
(torch, llama_cpp, mlx ...) inside ``motorpool_load``, never at module top.

The host calls each hook on **one plugin at a time**: probe and match on every plugin
(failures isolated per plugin), the rest only on the plugin that owns the model. No hook
is broadcast, so ``firstresult`` and hook wrappers carry no meaning here.

Required: ``motorpool_probe`` and ``motorpool_load``, plus ``motorpool_generate`` or
``motorpool_stream`` (or ``motorpool_open_session`` for world models). Everything else
has a default.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from motorpool._markers import hookspec

if TYPE_CHECKING:
    from motorpool.engine import (
        Context,
        InteractiveSession,
        LoadedModel,
        ResolvedSource,
        TinyModel,
    )
    from motorpool.types import (
        GenerationRequest,
        GenerationResult,
        ModelSpec,
        ProbeReport,
        SeedFrame,
        SessionConfig,
        StreamEvent,
    )

# -------------------------------------------------------------------------
# Discovery and readiness
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def motorpool_probe(deep: bool) -> ProbeReport:
    """Report whether the plugin can run here, what it can do, and what it is missing.

    :param deep:
        ``False``: answer without importing the engine (``importlib.util.find_spec``,
        platform checks); this runs on every ``motorpool plugins`` and must be fast.
        ``True``: the engine may be imported to report its build, devices and memory.

    Return a :class:`~motorpool.types.ProbeReport`. When a dependency is missing, set
    ``ready=False`` and give the exact install command for this machine in ``missing``.
    An exception is reported as the plugin's probe error; other plugins are unaffected.

    Added in 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def motorpool_match(spec: ModelSpec, path: Path | None) -> int | None:
    """Say how sure the plugin is that it can load a source, for specs that name no plugin.

    :param spec:
        The model spec; ``spec.plugin`` is ``None``.
    :param path:
        The local path of the source, or ``None`` for a hub repo not yet downloaded
        (judge from ``spec.source`` and ``spec.files`` then).

    Return a confidence from 1 to 100, or ``None`` when the source is not for this plugin.
    The most confident plugin loads the model. Must not import the engine.
    Default: the plugin is never chosen automatically.

    Added in 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def motorpool_tiny_model(directory: Path) -> TinyModel | None:
    """Build a tiny model in ``directory`` for the self-check and the conformance suite.

    :param directory:
        An empty folder the plugin owns for the call.

    Return a :class:`~motorpool.engine.TinyModel` (a spec whose source lies in
    ``directory`` and a request it answers, or for a world model the ``seed`` image a
    session opens on) in a few seconds, without the network, or ``None`` when the plugin
    cannot build one here.

    Added in 0.1.
    """
    raise NotImplementedError


# -------------------------------------------------------------------------
# Model lifecycle
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def motorpool_estimate_memory(source: ResolvedSource) -> int | None:
    """Estimate the bytes the model will occupy once loaded, before loading it.

    :param source:
        The resolved source (a local path) and its spec with the load options, which
        change the answer (context length, dtype, quantisation).

    Return bytes, or ``None`` to let the host use the size on disk. The host uses the
    estimate to keep within its memory budget, evicting idle models first.

    Added in 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def motorpool_load(source: ResolvedSource, context: Context) -> LoadedModel[object]:
    """Load a model and return its handle.

    :param source:
        The resolved source; validate ``source.spec.options`` with
        ``source.options(MyOptions)``, which raises a typed error on bad options.
    :param context:
        Report load stages with ``context.progress`` and stop early when
        ``context.cancelled`` (raise :class:`~motorpool.errors.Cancelled`).

    Return a :class:`~motorpool.engine.LoadedModel`. Raise
    :class:`~motorpool.errors.InvalidModel` when the source is not a model this plugin
    loads; any other exception becomes a ``load_failed`` state with its message.
    Never called under the host's lock; loads of different models may run concurrently.

    Added in 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def motorpool_unload(model: LoadedModel[object]) -> None:
    """Release a loaded model's memory (free GPU memory, close files).

    :param model:
        What ``motorpool_load`` returned. No request is running on it.

    Default: the host drops its reference and lets the garbage collector free it.

    Added in 0.1.
    """
    raise NotImplementedError


# -------------------------------------------------------------------------
# Generation
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def motorpool_generate(
    model: LoadedModel[object], request: GenerationRequest, context: Context
) -> GenerationResult:
    """Run one request to completion and return its result.

    :param model:
        What ``motorpool_load`` returned.
    :param request:
        A validated request whose kind is one of ``model.capabilities``; raise
        :class:`~motorpool.errors.InvalidRequest` for input the engine rejects.
    :param context:
        Report steps with ``context.progress``; check ``context.cancelled`` between
        tokens or steps and return early (text: ``finish_reason="cancelled"``) or
        raise :class:`~motorpool.errors.Cancelled`.

    Default: the host drains ``motorpool_stream``. Implement it too when the engine has
    a faster non-streaming path.

    Added in 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def motorpool_stream(
    model: LoadedModel[object], request: GenerationRequest, context: Context
) -> Iterator[StreamEvent]:
    """Run one request, yielding events as they happen.

    :param model:
        What ``motorpool_load`` returned.
    :param request:
        As for ``motorpool_generate``.
    :param context:
        As for ``motorpool_generate``; the host also stops iterating as soon as the
        request is cancelled, so a generator is closed within one event.

    Yield ``token`` / ``progress`` / ``frame`` events and end with exactly one
    ``result`` event. Raising ends the stream with an ``error`` event.
    Default: the host runs ``motorpool_generate`` in a thread and streams its progress.

    Added in 0.1.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def motorpool_open_session(
    model: LoadedModel[object], config: SessionConfig, seed: SeedFrame, context: Context
) -> InteractiveSession:
    """Open an interactive session on a world model.

    :param model:
        What ``motorpool_load`` returned; its capabilities include ``world``.
    :param config:
        Pacing, prompt, encoding and recording (``record_path``) settings of the session.
    :param seed:
        The image the session starts from.
    :param context:
        Report warm-up as progress; the session ends when ``context.cancelled``.

    Return an :class:`~motorpool.engine.InteractiveSession`: its ``info`` says the frame
    size, frames per step, the model's frame rate and context length; its ``step`` may
    return a :class:`~motorpool.engine.PendingBatch` to be encoded off the stepping
    thread. The host merges controls, paces, resets before the context runs out and drops
    batches a slow consumer cannot take; it guarantees one session per model at a time
    when the model is exclusive.

    Added in 0.1.
    """
    raise NotImplementedError
