"""Commands that report: plugins, probe, models, ps, check, schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from motorpool.cli._app import json_option, open_host, print_json, size, table


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins: state, version, hooks, and why a plugin is not loaded."""
    from motorpool.types import PluginState  # noqa: PLC0415

    with open_host() as host:
        records = host.plugins
        if as_json:
            print_json(records)
            return
        if not records:
            click.echo("no plugins installed (entry-point group motorpool.engines)")
            return
        capabilities = {
            p.plugin: ",".join(sorted(c.value for c in p.report.capabilities))
            if p.report is not None
            else f"probe failed: {p.error}"
            for p in host.probe()
            if p.report is not None or p.state is PluginState.LOADED
        }
        rows = [
            [
                r.name,
                r.version or "-",
                r.state.value,
                capabilities.get(r.name, "-"),
                f"{r.error} -> {r.hint}" if r.error else (r.hint or ""),
            ]
            for r in records
        ]
        table(["name", "version", "state", "capabilities", "reason"], rows)


@click.command()
@click.option("--deep", is_flag=True, help="Let plugins import their engines for details.")
@json_option
def probe(deep: bool, as_json: bool) -> None:
    """Report the hardware and whether each plugin can run here, with install commands."""
    from motorpool.types import Frozen, HardwareReport, PluginProbe  # noqa: PLC0415

    class ProbeOutput(Frozen):
        hardware: HardwareReport
        plugins: tuple[PluginProbe, ...]

    with open_host() as host:
        output = ProbeOutput(hardware=host.hardware(), plugins=tuple(host.probe(deep=deep)))
    if as_json:
        print_json(output)
        return
    hw = output.hardware
    click.secho("hardware", bold=True)
    click.echo(
        f"  {hw.system} {hw.machine}, Python {hw.python}, {hw.cpu_count} CPUs, "
        f"{size(hw.memory_total_bytes)} memory ({size(hw.memory_available_bytes)} free)"
    )
    for device in hw.accelerators:
        memory = f", {size(device.memory_bytes)}" if device.memory_bytes else ""
        click.echo(f"  {device.accelerator.value}: {device.name}{memory}")
    if not hw.accelerators:
        click.echo("  no GPU found (CUDA, ROCm or Metal); engines run on the CPU")
    click.secho("plugins", bold=True)
    for item in output.plugins:
        if item.report is None:
            click.echo(f"  {item.plugin}: {item.state.value}: {item.error}")
            continue
        report = item.report
        status = "ready" if report.ready else "not ready"
        caps = ", ".join(sorted(c.value for c in report.capabilities))
        click.echo(f"  {item.plugin}: {status} ({caps})")
        for missing in report.missing:
            click.echo(f"    missing {missing.package}: {missing.install}")
        for note in report.notes:
            click.echo(f"    note: {note}")


@click.command()
@json_option
def models(as_json: bool) -> None:
    """List the model aliases of the models file (MOTORPOOL_MODELS_FILE)."""
    with open_host() as host:
        aliases = host.aliases
        if as_json:
            print_json(list(aliases.values()))
            return
        if not aliases:
            click.echo(f"no models defined in {host.settings.models_path}")
            return
        rows = [
            [
                alias,
                spec.plugin or "(auto)",
                spec.source,
                " ".join(f"{k}={v}" for k, v in spec.options.items()),
                " ".join(
                    name for name, on in (("pinned", spec.pinned), ("preload", spec.preload)) if on
                ),
            ]
            for alias, spec in aliases.items()
        ]
        table(["alias", "plugin", "source", "options", "flags"], rows)


@click.command()
@json_option
def ps(as_json: bool) -> None:
    """Load the models marked preload in the models file and show every model's state."""
    from motorpool.errors import MotorpoolError  # noqa: PLC0415

    with open_host() as host:
        for alias, spec in host.aliases.items():
            if spec.preload:
                try:
                    host.load(alias)
                except MotorpoolError as exc:  # shown in the table as a failed model
                    click.echo(f"{alias}: {exc}", err=True)
        models = host.models()
        if as_json:
            print_json(models)
            return
        if not models:
            click.echo("no models loaded (mark models `preload = true` in the models file)")
            return
        rows = [
            [
                m.id,
                m.plugin,
                m.status.value,
                size(m.memory_bytes),
                f"{m.idle_s:.0f}s" if m.idle_s is not None else "-",
                m.error.message if m.error else "",
            ]
            for m in models
        ]
        table(["model", "plugin", "state", "memory", "idle", "error"], rows)


@click.command()
@click.argument("plugin_names", nargs=-1, metavar="[PLUGIN]...")
@json_option
def check(plugin_names: tuple[str, ...], as_json: bool) -> None:
    """Smoke-run each installed plugin on a tiny model it builds itself."""
    from motorpool._check import self_check  # noqa: PLC0415

    with open_host() as host:
        results = self_check(host, plugin_names)
    if as_json:
        print_json(results)
    else:
        rows = [
            [
                "skip" if r.skipped else ("pass" if r.ok else "FAIL"),
                r.plugin,
                r.stage,
                " ".join(f"{k}={v:.2f}s" for k, v in r.seconds.items()),
                r.error or "",
            ]
            for r in results
        ]
        if rows:
            table(["result", "plugin", "stage", "timings", "error"], rows)
        else:
            click.echo("no plugins to check")
    if not all(r.ok for r in results):
        raise SystemExit(1)


@click.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of every wire type (for generating frontend types)."""
    from motorpool.server.schema import wire_schema  # noqa: PLC0415

    text = json.dumps(wire_schema(), indent=2, sort_keys=True)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
