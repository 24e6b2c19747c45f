"""Find engine plugins through entry points, import them safely, validate them with pluggy.

Every entry point ends in a reported state: loaded, disabled (not allowed, never
imported) or failed (with the error, its distribution and a fix). One broken plugin
never stops the others from loading.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import pluggy
import structlog
from stevedore import ExtensionManager, NamedExtensionManager
from stevedore.extension import Extension

from motorpool import hookspecs
from motorpool._markers import PROJECT_NAME
from motorpool._plugin import REQUIRED_HOOKS, RUN_HOOKS, HookFunction, Plugin
from motorpool.errors import PluginDiscoveryError
from motorpool.types import PluginInfo, PluginState

ENGINES_GROUP = "motorpool.engines"
"""Entry-point group of engine plugins; loaded by the host process (``Host``)."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Discovered:
    """The outcome of one discovery: live plugins by name, and a record of every entry point."""

    plugins: Mapping[str, Plugin]
    records: Mapping[str, PluginInfo]


def parse_allow_list(value: str | None) -> frozenset[str] | None:
    """``MOTORPOOL_PLUGINS``: unset = every plugin, empty = none, ``a,b`` = only those."""
    if value is None:
        return None
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def discover(
    *,
    allow: frozenset[str] | None,
    strict: bool,
    extra: Mapping[str, object] | None = None,
) -> Discovered:
    """Load the plugins of group ``motorpool.engines`` and any ``extra`` plugin objects.

    :param allow: plugin names to load; ``None`` loads every one.
    :param strict: raise :class:`PluginDiscoveryError` if any plugin failed.
    :param extra: plugin objects registered directly (tests, embedding applications).
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    records: dict[str, PluginInfo] = {}
    plugins: dict[str, Plugin] = {}

    def on_failure(_manager: object, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
        exc = exc.__cause__ if isinstance(exc, _ImportAborted) and exc.__cause__ else exc
        records[ep.name] = _failed_record(ep.name, ep.value, exc, _import_hint(ep, exc))
        log.warning("plugin failed to import", plugin=ep.name, error=_describe(exc))

    # The class-level cache is keyed by group only; stevedore's path-keyed cache
    # (in memory and on disk) still makes this a cheap read on a warm start.
    ExtensionManager.ENTRY_POINT_CACHE.pop(ENGINES_GROUP, None)
    # A named manager checks each name before importing: disallowed code never runs.
    loaded: ExtensionManager[object] = (
        _ContainedManager(ENGINES_GROUP, on_load_failure_callback=on_failure)
        if allow is None
        else _ContainedNamedManager(
            ENGINES_GROUP,
            names=sorted(allow),
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )
    )
    entry_points = {ep.name: ep for ep in loaded.list_entry_points()}
    if allow is not None:
        for unknown in sorted(allow - entry_points.keys() - (extra or {}).keys()):
            log.warning(
                "allowed plugin is not installed",
                plugin=unknown,
                installed=sorted(entry_points),
                setting="MOTORPOOL_PLUGINS",
            )

    candidates: list[tuple[str, str, object]] = [
        (ext.name, ext.entry_point.value, ext.plugin) for ext in loaded
    ]
    candidates += [(name, f"<registered {name}>", obj) for name, obj in (extra or {}).items()]
    for name, target, obj in candidates:
        record, plugin = _register(manager, name, target, obj)
        records[name] = record
        if plugin is not None:
            plugins[name] = plugin

    for name, ep in entry_points.items():
        if name not in records:
            records[name] = PluginInfo(
                name=name,
                state=PluginState.DISABLED,
                entry_point=ep.value,
                hint=f"add {name!r} to MOTORPOOL_PLUGINS to enable it",
            )

    failed = [r for r in records.values() if r.state is PluginState.FAILED]
    if strict and failed:
        summary = "; ".join(f"{r.name}: {r.error}" for r in failed)
        raise PluginDiscoveryError(
            f"{len(failed)} plugin(s) failed: {summary}",
            hint="fix or uninstall them, or unset MOTORPOOL_STRICT_PLUGINS",
        )
    return Discovered(plugins=plugins, records=dict(sorted(records.items())))


class _ImportAborted(Exception):
    """A plugin import that raised ``AssertionError`` or ``SystemExit``.

    stevedore lets those escape its per-plugin guard; wrapped, they reach the failure
    callback like any other import error and the remaining plugins still load.
    """


class _ContainedManager(ExtensionManager[object]):
    """stevedore's manager, with AssertionError and SystemExit at import contained too."""

    def _load_one_plugin(
        self,
        ep: importlib.metadata.EntryPoint,
        invoke_on_load: bool,
        invoke_args: tuple[Any, ...],
        invoke_kwds: dict[str, Any],
    ) -> Extension[object] | None:
        try:
            return super()._load_one_plugin(ep, invoke_on_load, invoke_args, invoke_kwds)
        except (AssertionError, SystemExit) as exc:
            raise _ImportAborted(str(exc)) from exc


class _ContainedNamedManager(_ContainedManager, NamedExtensionManager[object]):
    """The named manager (checks each name before importing), contained the same way."""


def _register(
    manager: pluggy.PluginManager, name: str, target: str, obj: object
) -> tuple[PluginInfo, Plugin | None]:
    """Register one plugin object with pluggy and check it implements a usable contract."""
    try:
        manager.register(obj, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        log.warning("plugin rejected", plugin=name, error=_describe(exc))
        return _failed_record(name, target, exc, _contract_hint(target)), None

    hooks: dict[str, HookFunction] = {}
    problems: list[str] = []
    for caller in manager.get_hookcallers(obj) or []:
        if caller.spec is None:
            close = difflib.get_close_matches(caller.name, _spec_names(), n=1)
            suggestion = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown hook {caller.name}{suggestion}")
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is obj:
                hooks[caller.name] = HookFunction(impl.function, tuple(impl.argnames))
    missing = [hook for hook in REQUIRED_HOOKS if hook not in hooks]
    if missing:
        problems.append("missing required hook(s) " + ", ".join(missing))
    if not any(hook in hooks for hook in RUN_HOOKS):
        problems.append("implements none of " + ", ".join(RUN_HOOKS))
    if problems:
        manager.unregister(obj)
        dist, version = _distribution_of(target)
        error = "; ".join(problems)
        log.warning("plugin rejected", plugin=name, error=error)
        record = PluginInfo(
            name=name,
            state=PluginState.FAILED,
            entry_point=target,
            error=error,
            hint=_contract_hint(target),
            distribution=dist,
            version=version,
        )
        return record, None

    # Distribution and version are filled in on demand (with_distributions): finding
    # them scans every installed package, which a warm start-up should not pay for.
    record = PluginInfo(
        name=name, state=PluginState.LOADED, entry_point=target, hooks=tuple(sorted(hooks))
    )
    return record, Plugin(name, obj, hooks)


def with_distributions(records: Mapping[str, PluginInfo]) -> dict[str, PluginInfo]:
    """The records with the distribution and version of each installed entry point."""
    filled: dict[str, PluginInfo] = {}
    for name, record in records.items():
        dist, version = (
            (None, None) if record.distribution else _distribution_of(record.entry_point)
        )
        filled[name] = (
            record
            if dist is None
            else record.model_copy(update={"distribution": dist, "version": version})
        )
    return filled


@cache
def _spec_names() -> tuple[str, ...]:
    return tuple(n for n in vars(hookspecs) if n.startswith("motorpool_"))


def _failed_record(name: str, target: str, exc: BaseException, hint: str) -> PluginInfo:
    dist, version = _distribution_of(target)
    return PluginInfo(
        name=name,
        state=PluginState.FAILED,
        entry_point=target,
        error=_describe(exc),
        hint=hint,
        distribution=dist,
        version=version,
    )


def _describe(exc: BaseException) -> str:
    # One line: pluggy's validation messages span several, which breaks tables and logs.
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _distribution_of(target: str) -> tuple[str | None, str | None]:
    """The distribution and version that ship an entry point, if installed."""
    dist = _distributions_by_target(tuple(sys.path)).get(target)
    return (None, None) if dist is None else (dist.name, dist.version)


@lru_cache(maxsize=4)
def _distributions_by_target(
    path: tuple[str, ...],
) -> Mapping[str, importlib.metadata.Distribution]:
    del path  # the cache key: a changed sys.path makes other distributions visible
    # Read once per process, only for failed plugins or a listing of versions: this
    # scans every installed distribution, which stevedore's cache spares start-up.
    return {
        ep.value: ep.dist
        for ep in importlib.metadata.entry_points(group=ENGINES_GROUP)
        if ep.dist is not None
    }


def _import_hint(ep: importlib.metadata.EntryPoint, exc: BaseException) -> str:
    dist, _ = _distribution_of(ep.value)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top_missing = exc.name.split(".")[0]
        if dist is not None and top_missing != ep.value.split(".")[0]:
            requirement = _requirement_providing(dist, top_missing)
            if requirement is not None:
                return (
                    f"{dist} needs {requirement!r}, which is not installed: "
                    f"pip install {_quote(requirement)}"
                )
            return (
                f"{dist} imports {top_missing!r}, which is not installed: pip install {top_missing}"
            )
    if dist is not None:
        return (
            f"the plugin's code failed at import: reinstall or upgrade it "
            f"(pip install --upgrade {dist}) or report it to its author"
        )
    return "the plugin's code failed at import: reinstall it or report it to its author"


def _requirement_providing(dist: str, module: str) -> str | None:
    """The requirement of ``dist`` that installs ``module``, matched by normalised name."""
    wanted = _normalise(module)
    for requirement in importlib.metadata.requires(dist) or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]
        if _normalise(name) == wanted:
            return requirement.split(";")[0].strip()
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _quote(requirement: str) -> str:
    return f"'{requirement}'" if any(c in requirement for c in "<>=! ") else requirement


def _contract_hint(target: str) -> str:
    dist = _distribution_of(target)[0] or "the plugin"
    return (
        f"{dist} does not match this motorpool's hook contract (see docs/plugins.md): "
        f"upgrade it (pip install --upgrade {dist}) or report it to its author"
    )
