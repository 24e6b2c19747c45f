"""The self-check: build each plugin's tiny model, load it, run its request, unload it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from motorpool._host import Host
from motorpool.errors import MotorpoolError
from motorpool.types import Frozen, PluginState

Stage = Literal["discovery", "tiny_model", "load", "generate", "unload", "done"]


class CheckResult(Frozen):
    """How one plugin fared; ``stage`` is where it stopped."""

    plugin: str
    ok: bool
    skipped: bool = False
    stage: Stage
    error: str | None = None
    seconds: dict[str, float] = Field(default_factory=dict[str, float])


def self_check(host: Host, names: tuple[str, ...] = ()) -> list[CheckResult]:
    """Smoke-run every loaded plugin (or only ``names``) on a tiny model it builds itself."""
    results: list[CheckResult] = []
    for record in host.plugins:
        if names and record.name not in names:
            continue
        if record.state is PluginState.DISABLED:
            results.append(
                CheckResult(
                    plugin=record.name,
                    ok=True,
                    skipped=True,
                    stage="discovery",
                    error="disabled by MOTORPOOL_PLUGINS",
                )
            )
        elif record.state is PluginState.FAILED:
            results.append(
                CheckResult(
                    plugin=record.name,
                    ok=False,
                    stage="discovery",
                    error=f"{record.error} ({record.hint})",
                )
            )
        else:
            results.append(_check_plugin(host, record.name))
    return results


def _check_plugin(host: Host, name: str) -> CheckResult:
    seconds: dict[str, float] = {}
    stage: Stage = "tiny_model"
    with tempfile.TemporaryDirectory(prefix=f"motorpool-check-{name}-") as folder:
        try:
            started = time.perf_counter()
            tiny = host.tiny_model(name, Path(folder))
            seconds[stage] = time.perf_counter() - started
            if tiny is None:
                return CheckResult(
                    plugin=name,
                    ok=True,
                    skipped=True,
                    stage=stage,
                    error="the plugin cannot build a tiny model here",
                )
            stage = "load"
            started = time.perf_counter()
            info = host.load(tiny.spec)
            seconds[stage] = time.perf_counter() - started
            stage = "generate"
            started = time.perf_counter()
            if tiny.request is not None:
                host.generate(info.id, tiny.request)
            elif tiny.seed is not None:
                with host.session(info.id, seed=tiny.seed) as session:
                    session.step()
            seconds[stage] = time.perf_counter() - started
            stage = "unload"
            started = time.perf_counter()
            host.unload(info.id)
            seconds[stage] = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - a plugin bug is reported; the others still run
            error = str(exc) if isinstance(exc, MotorpoolError) else f"{type(exc).__name__}: {exc}"
            return CheckResult(plugin=name, ok=False, stage=stage, error=error, seconds=seconds)
    return CheckResult(plugin=name, ok=True, stage="done", seconds=seconds)
