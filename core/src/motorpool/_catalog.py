"""What can be loaded: the discovered plugins, the models file, and how a name becomes a spec."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import structlog

from motorpool._discovery import Discovered, with_distributions
from motorpool._plugin import Plugin
from motorpool._sources import hub_repo_id, load_models_file, local_path
from motorpool.errors import NoMatchingPlugin, PluginUnavailable, UnknownModel, UnknownPlugin
from motorpool.types import ModelSpec, PluginInfo, PluginProbe, ProbeReport

log = structlog.get_logger(__name__)


class Catalog:
    """Plugins by name (loaded or not, with why) and model aliases. Read-only after start."""

    def __init__(self, found: Discovered, models_file: Path) -> None:
        self._plugins: Mapping[str, Plugin] = found.plugins
        self._records: Mapping[str, PluginInfo] = found.records
        self._versions_known = False
        self.models_file = models_file
        self.aliases: Mapping[str, ModelSpec] = load_models_file(models_file)

    @property
    def loaded_names(self) -> list[str]:
        """Names of the plugins that loaded."""
        return sorted(self._plugins)

    def records(self) -> list[PluginInfo]:
        """Every entry point with its state, distribution and version."""
        if not self._versions_known:  # looked up on first listing, not at start-up
            self._records = with_distributions(self._records)
            self._versions_known = True
        return list(self._records.values())

    def probe(self, *, deep: bool) -> list[PluginProbe]:
        """Each plugin's probe; a failing probe is reported, not raised."""
        probes: list[PluginProbe] = []
        for name, record in self._records.items():
            plugin = self._plugins.get(name)
            if plugin is None:
                probes.append(PluginProbe(plugin=name, state=record.state, error=record.error))
                continue
            try:
                report = cast("object", plugin.probe(deep=deep))  # checked: plugins err
            except Exception as exc:
                log.exception("probe failed", plugin=name)
                error = f"{type(exc).__name__}: {exc}"
                probes.append(PluginProbe(plugin=name, state=record.state, error=error))
                continue
            if isinstance(report, ProbeReport):
                probes.append(PluginProbe(plugin=name, state=record.state, report=report))
            else:  # a plugin bug, shown as that plugin's probe error
                error = f"motorpool_probe returned {type(report).__name__}, not ProbeReport"
                probes.append(PluginProbe(plugin=name, state=record.state, error=error))
        return probes

    def plugin(self, name: str) -> Plugin:
        """A loaded plugin, or a typed error saying why there is none by that name."""
        plugin = self._plugins.get(name)
        if plugin is not None:
            return plugin
        record = self._records.get(name)
        if record is None:
            raise UnknownPlugin(
                f"no plugin named {name!r} is installed",
                hint=f"installed: {', '.join(self._records) or 'none'}; "
                "`motorpool plugins` lists them",
            )
        reason = f": {record.error}" if record.error else ""
        raise PluginUnavailable(
            f"plugin {name!r} is {record.state.value}{reason}", hint=record.hint
        )

    def spec(self, model: str) -> ModelSpec:
        """The spec a name stands for: an alias, ``plugin:source``, or a path / repo id."""
        if model in self.aliases:
            return self.aliases[model]
        plugin, sep, source = model.partition(":")
        if sep and plugin in self._records and source:
            return ModelSpec(plugin=plugin, source=source)
        if local_path(model) is not None or hub_repo_id(model) is not None:
            return ModelSpec(source=model)
        raise UnknownModel(
            f"unknown model {model!r}",
            hint=f"use an alias from {self.models_file} "
            f"({', '.join(self.aliases) or 'none defined'}), "
            "a path, a Hugging Face repo id, or plugin:source",
        )

    def owner(self, spec: ModelSpec) -> tuple[ModelSpec, Plugin]:
        """The plugin that loads ``spec``: the one it names, or the most confident match."""
        if spec.plugin is not None:
            return spec, self.plugin(spec.plugin)
        path = local_path(spec.source)
        scores: list[tuple[int, str]] = []
        for name, plugin in self._plugins.items():
            try:
                score = cast("object", plugin.match(spec, path))  # checked: plugins err
            except Exception:
                log.exception("match failed", plugin=name)
                continue
            if isinstance(score, bool) or not isinstance(score, int | None):
                log.warning("match returned no score; ignored", plugin=name, value=repr(score))
            elif score:
                scores.append((score, name))
        if not scores:
            raise NoMatchingPlugin(
                f"no installed plugin recognises {spec.source!r}",
                hint="name the plugin (plugin:source) or install one that loads this format; "
                "`motorpool probe` lists what each plugin loads",
            )
        best = max(scores)[1]
        return spec.model_copy(update={"plugin": best}), self._plugins[best]
