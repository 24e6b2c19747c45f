"""The ``motorpool`` group and what its commands share: options, the host, output."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pydantic import BaseModel, JsonValue

    from motorpool._host import Host
    from motorpool._settings import Settings
    from motorpool.types import ModelSpec, ProgressEvent

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def output_option(what: str, ext: str) -> Callable[[F], F]:
    """``--output``/``-o``: where ``what`` goes (default :func:`default_output`)."""
    return click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{what} (default: ./motorpool-<time>.{ext}).",
    )


def default_output(suffix: str) -> Path:
    """``motorpool-<time><suffix>`` in the working folder."""
    return Path(f"motorpool-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")


def model_options(command: F) -> F:
    """``--plugin`` and ``--option KEY=VALUE``: how to load the command's MODEL."""
    command = click.option(
        "--option",
        "options",
        multiple=True,
        metavar="KEY=VALUE",
        help="A load option for the plugin (repeatable; values are JSON or text).",
    )(command)
    return click.option(
        "--plugin", help="Plugin to load MODEL with (default: alias, or auto-detect)."
    )(command)


class MotorpoolGroup(click.Group):
    """Turns typed errors into a message and a hint on stderr, exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 - click's own signature
        from motorpool.errors import MotorpoolError  # noqa: PLC0415 - keep --help fast

        try:
            return super().invoke(ctx)
        except MotorpoolError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  hint: {exc.hint}", err=True)
            raise SystemExit(1) from exc


@click.group(cls=MotorpoolGroup)
@click.version_option(package_name="motorpool")
def main() -> None:
    """motorpool: one host for many inference engines, found as plugins."""


@contextmanager
def open_host() -> Generator[Host]:
    """A host from the settings, logging only warnings unless MOTORPOOL_LOG_LEVEL says."""
    from motorpool._host import Host  # noqa: PLC0415 - keep --help fast
    from motorpool._logging import configure_logging  # noqa: PLC0415
    from motorpool._settings import Settings  # noqa: PLC0415

    settings = load_settings(Settings)
    # The terminal is for results: only warnings and worse unless asked otherwise.
    level = settings.log_level if "MOTORPOOL_LOG_LEVEL" in os.environ else "warning"
    configure_logging(level, settings.log_format)
    with Host(settings) as host:
        yield host


def load_settings(settings_class: type[Settings], **overrides: Any) -> Settings:  # noqa: ANN401 - any field
    """Settings with the options given on the command line; bad ones are a typed error."""
    import tomllib  # noqa: PLC0415

    from pydantic import ValidationError  # noqa: PLC0415
    from pydantic_settings import SettingsError  # noqa: PLC0415

    from motorpool._settings import config_file_path  # noqa: PLC0415
    from motorpool.errors import InvalidRequest  # noqa: PLC0415

    try:
        return settings_class(**{k: v for k, v in overrides.items() if v not in (None, ())})
    except (ValidationError, SettingsError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"invalid settings: {' '.join(str(exc).split())}",
            hint=f"check the MOTORPOOL_* environment variables and {config_file_path()}",
        ) from exc


def print_json(value: BaseModel | Sequence[BaseModel]) -> None:
    """``--json`` output: the value as indented JSON."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    adapter: TypeAdapter[Any] = TypeAdapter(type(value))
    click.echo(adapter.dump_json(value, indent=2).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows in aligned columns under bold headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    click.secho(line([h.upper() for h in headers]), bold=True)
    for row in rows:
        click.echo(line(row))


def model_spec(host: Host, model: str, plugin: str | None, options: tuple[str, ...]) -> ModelSpec:
    """The spec ``--plugin`` and ``--option`` make of MODEL (an alias keeps its own options)."""
    from motorpool.types import ModelSpec  # noqa: PLC0415

    spec = host.spec(model) if plugin is None else ModelSpec(plugin=plugin, source=model)
    if options:
        spec = spec.model_copy(update={"options": {**spec.options, **parse_options(options)}})
    return spec


def parse_options(pairs: tuple[str, ...]) -> dict[str, JsonValue]:
    """``--option KEY=VALUE`` pairs; a value that is not JSON is text."""
    options: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--option")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


@contextmanager
def progress_bars(*, enabled: bool) -> Generator[Callable[[ProgressEvent], None]]:
    """One click progress bar per stage with a known total, on stderr."""
    bars: dict[str, Any] = {}

    def on_progress(event: ProgressEvent) -> None:
        if not enabled or event.total is None or not sys.stderr.isatty():
            return
        bar = bars.get(event.stage)
        if bar is None:
            bar = click.progressbar(length=event.total, label=event.stage, file=sys.stderr)
            bar.__enter__()
            bars[event.stage] = bar
        bar.update(event.step - bar.pos)

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)


def size(count: int | None) -> str:
    """A byte count for a table cell (``-`` when unknown)."""
    from motorpool._memory import size as readable  # noqa: PLC0415

    return "-" if count is None else readable(count)
