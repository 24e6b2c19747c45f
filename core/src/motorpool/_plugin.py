"""A registered plugin and typed, O(1) calls into its hook implementations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast

import structlog

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

log = structlog.get_logger(__name__)

REQUIRED_HOOKS = ("motorpool_probe", "motorpool_load")
GENERATION_HOOKS = ("motorpool_generate", "motorpool_stream")
"""Either one runs completion, chat, image and video requests."""
SESSION_HOOKS = ("motorpool_open_session",)
"""Runs world (interactive) sessions."""
RUN_HOOKS = GENERATION_HOOKS + SESSION_HOOKS


class HookFunction(NamedTuple):
    """A plugin's implementation of one hook and the parameters it accepts.

    pluggy lets an implementation take a subset of the spec's parameters (a plugin
    written for an older contract still works); the call passes only those.
    """

    function: Callable[..., Any]
    argnames: tuple[str, ...]


class Plugin:
    """One loaded plugin: its name, its object, and its hook functions by hook name.

    Calls go straight to the plugin's own function (no broadcast over every plugin):
    the host always knows which plugin owns a model.
    """

    def __init__(self, name: str, obj: object, hooks: dict[str, HookFunction]) -> None:
        self.name = name
        self.obj = obj
        self._hooks = hooks

    def implements(self, hook: str) -> bool:
        """True when the plugin has an implementation of ``hook``."""
        return hook in self._hooks

    def implements_any(self, *hooks: str) -> bool:
        """True when the plugin implements at least one of ``hooks``."""
        return any(hook in self._hooks for hook in hooks)

    def _call(self, hook: str, **kwargs: object) -> Any:  # noqa: ANN401 - typed by each caller
        started = time.perf_counter()
        try:
            function, argnames = self._hooks[hook]
            return function(**{name: kwargs[name] for name in argnames})
        finally:
            log.debug(
                "hook called",
                plugin=self.name,
                hook=hook,
                seconds=round(time.perf_counter() - started, 6),
            )

    def probe(self, *, deep: bool) -> ProbeReport:
        """Call ``motorpool_probe``."""
        return cast("ProbeReport", self._call("motorpool_probe", deep=deep))

    def match(self, spec: ModelSpec, path: Path | None) -> int | None:
        """Call ``motorpool_match``; ``None`` when the plugin does not implement it."""
        if not self.implements("motorpool_match"):
            return None
        return cast("int | None", self._call("motorpool_match", spec=spec, path=path))

    def tiny_model(self, directory: Path) -> TinyModel | None:
        """Call ``motorpool_tiny_model``; ``None`` when the plugin does not implement it."""
        if not self.implements("motorpool_tiny_model"):
            return None
        return cast("TinyModel | None", self._call("motorpool_tiny_model", directory=directory))

    def estimate_memory(self, source: ResolvedSource) -> int | None:
        """Call ``motorpool_estimate_memory``; ``None`` when not implemented."""
        if not self.implements("motorpool_estimate_memory"):
            return None
        return cast("int | None", self._call("motorpool_estimate_memory", source=source))

    def load(self, source: ResolvedSource, context: Context) -> LoadedModel[object]:
        """Call ``motorpool_load``."""
        return cast(
            "LoadedModel[object]", self._call("motorpool_load", source=source, context=context)
        )

    def unload(self, model: LoadedModel[object]) -> None:
        """Call ``motorpool_unload`` when implemented."""
        if self.implements("motorpool_unload"):
            self._call("motorpool_unload", model=model)

    def generate(
        self, model: LoadedModel[object], request: GenerationRequest, context: Context
    ) -> GenerationResult:
        """Call ``motorpool_generate``."""
        return cast(
            "GenerationResult",
            self._call("motorpool_generate", model=model, request=request, context=context),
        )

    def stream(
        self, model: LoadedModel[object], request: GenerationRequest, context: Context
    ) -> Iterator[StreamEvent]:
        """Call ``motorpool_stream``."""
        return cast(
            "Iterator[StreamEvent]",
            self._call("motorpool_stream", model=model, request=request, context=context),
        )

    def open_session(
        self,
        model: LoadedModel[object],
        config: SessionConfig,
        seed: SeedFrame,
        context: Context,
    ) -> InteractiveSession:
        """Call ``motorpool_open_session``."""
        return cast(
            "InteractiveSession",
            self._call(
                "motorpool_open_session", model=model, config=config, seed=seed, context=context
            ),
        )
