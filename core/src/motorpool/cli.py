"""The ``motorpool`` command: plugins, probe, run, models, ps, check, serve, schema."""

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
    from motorpool.types import GenerationRequest, ModelInfo, ModelSpec, ProgressEvent

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


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
def _host() -> Generator[Host]:
    from motorpool._host import Host  # noqa: PLC0415 - keep --help fast
    from motorpool._logging import configure_logging  # noqa: PLC0415
    from motorpool._settings import Settings  # noqa: PLC0415

    settings = _settings(Settings)
    # The terminal is for results: only warnings and worse unless asked otherwise.
    level = settings.log_level if "MOTORPOOL_LOG_LEVEL" in os.environ else "warning"
    configure_logging(level, settings.log_format)
    with Host(settings) as host:
        yield host


def _settings(settings_class: type[Settings], **overrides: Any) -> Settings:  # noqa: ANN401 - any field
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


def _print_json(value: BaseModel | Sequence[BaseModel]) -> None:
    from pydantic import TypeAdapter  # noqa: PLC0415

    adapter: TypeAdapter[Any] = TypeAdapter(type(value))
    click.echo(adapter.dump_json(value, indent=2).decode())


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    click.secho(line([h.upper() for h in headers]), bold=True)
    for row in rows:
        click.echo(line(row))


@main.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins: state, version, hooks, and why a plugin is not loaded."""
    from motorpool.types import PluginState  # noqa: PLC0415

    with _host() as host:
        records = host.plugins
        if as_json:
            _print_json(records)
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
        _table(["name", "version", "state", "capabilities", "reason"], rows)


@main.command()
@click.option("--deep", is_flag=True, help="Let plugins import their engines for details.")
@json_option
def probe(deep: bool, as_json: bool) -> None:
    """Report the hardware and whether each plugin can run here, with install commands."""
    from motorpool.types import Frozen, HardwareReport, PluginProbe  # noqa: PLC0415

    class ProbeOutput(Frozen):
        hardware: HardwareReport
        plugins: tuple[PluginProbe, ...]

    with _host() as host:
        output = ProbeOutput(hardware=host.hardware(), plugins=tuple(host.probe(deep=deep)))
    if as_json:
        _print_json(output)
        return
    hw = output.hardware
    click.secho("hardware", bold=True)
    click.echo(
        f"  {hw.system} {hw.machine}, Python {hw.python}, {hw.cpu_count} CPUs, "
        f"{_size(hw.memory_total_bytes)} memory ({_size(hw.memory_available_bytes)} free)"
    )
    for device in hw.accelerators:
        memory = f", {_size(device.memory_bytes)}" if device.memory_bytes else ""
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


def _model_spec(host: Host, model: str, plugin: str | None, options: tuple[str, ...]) -> ModelSpec:
    """The spec ``--plugin`` and ``--option`` make of MODEL (an alias keeps its own options)."""
    from motorpool.types import ModelSpec  # noqa: PLC0415

    spec = host.spec(model) if plugin is None else ModelSpec(plugin=plugin, source=model)
    if options:
        spec = spec.model_copy(update={"options": {**spec.options, **_parse_options(options)}})
    return spec


def _parse_options(pairs: tuple[str, ...]) -> dict[str, JsonValue]:
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


@main.command()
@click.argument("model")
@click.argument("prompt")
@model_options
@click.option("--system", help="System message for chat models.")
@click.option("--raw", is_flag=True, help="Plain completion, no chat template.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0))
@click.option("--seed", type=click.IntRange(min=0))
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (image, video).")
@click.option("--width", type=click.IntRange(min=8))
@click.option("--height", type=click.IntRange(min=8))
@click.option("--frames", type=click.IntRange(min=1), help="Video frames.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write an image or video (default: ./motorpool-<time>.<ext>).",
)
@json_option
def run(  # noqa: PLR0917 - click passes each option by keyword
    model: str,
    prompt: str,
    plugin: str | None,
    options: tuple[str, ...],
    system: str | None,
    raw: bool,
    max_tokens: int,
    temperature: float | None,
    seed: int | None,
    steps: int | None,
    width: int | None,
    height: int | None,
    frames: int | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Run one generation: text streams to the terminal, an image becomes a PNG, a video an MP4."""
    from motorpool.types import Capability  # noqa: PLC0415

    if not model:
        raise click.BadParameter("must not be empty", param_hint="MODEL")
    with _host() as host:
        spec = _model_spec(host, model, plugin, options)
        with _progress_bars(enabled=not as_json) as on_progress:
            info = host.load(spec, on_progress=on_progress)
        caps = info.capabilities
        text = {"max_tokens": max_tokens, "sampling": {"temperature": temperature, "seed": seed}}
        visual = {"prompt": prompt, "steps": steps, "seed": seed, "width": width, "height": height}
        if Capability.CHAT in caps and not raw:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": prompt})
            fields = {"kind": "chat", "messages": messages, **text}
        elif Capability.COMPLETION in caps:
            fields = {"kind": "completion", "prompt": prompt, **text}
        elif Capability.IMAGE in caps:
            fields = {"kind": "image", **visual}
        elif Capability.VIDEO in caps:
            fields = {"kind": "video", "frames": frames, **visual}
        else:
            raise click.UsageError(f"{info.id} has no capability `run` can use ({sorted(caps)})")
        _run_request(host, info, _request(fields), output, as_json=as_json)


@main.command()
@click.argument("model")
@click.argument("seed_image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options
@click.option("--steps", type=click.IntRange(min=1), default=60, show_default=True)
@click.option(
    "--key",
    "held_keys",
    multiple=True,
    metavar="KEY",
    help="A key held throughout: a letter, a digit, space, shift, ctrl, up/down/left/right, "
    "or a virtual-key code (repeatable).",
)
@click.option("--mouse", nargs=2, type=float, default=(0.0, 0.0), metavar="DX DY",
              help="Mouse motion per step.")  # fmt: skip
@click.option("--prompt", help="Text conditioning (models that take it).")
@click.option("--realtime", is_flag=True, help="Pace to the model's own frame rate.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record the session to this MP4 (default: ./motorpool-<time>.mp4).",
)
@json_option
def play(  # noqa: PLR0917 - click passes each option by keyword
    model: str,
    seed_image: Path,
    plugin: str | None,
    options: tuple[str, ...],
    steps: int,
    held_keys: tuple[str, ...],
    mouse: tuple[float, float],
    prompt: str | None,
    realtime: bool,
    output: Path | None,
    as_json: bool,
) -> None:
    """Play a world model headless: STEPS batches from SEED_IMAGE under fixed controls, recorded."""
    from motorpool.types import ControlInput, SessionConfig  # noqa: PLC0415

    buttons = frozenset(_key_code(key) for key in held_keys)
    path = (output or Path(f"motorpool-{time.strftime('%Y%m%d-%H%M%S')}.mp4")).resolve()
    config = SessionConfig(realtime=realtime, prompt=prompt, record_path=str(path))
    with _host() as host:
        spec = _model_spec(host, model, plugin, options)
        started = time.perf_counter()
        with (
            _progress_bars(enabled=not as_json) as on_progress,
            host.session(
                spec, seed=seed_image.read_bytes(), config=config, on_progress=on_progress
            ) as session,
        ):
            opened = time.perf_counter()
            batches = frames = resets = 0
            generation_ms = 0.0
            try:
                for _ in range(steps):
                    session.control(
                        ControlInput(buttons=buttons, mouse_dx=mouse[0], mouse_dy=mouse[1])
                    )
                    batch = session.step()
                    batches += 1
                    frames += len(batch.frames)
                    resets += batch.reset is not None
                    generation_ms += batch.generation_ms
            except KeyboardInterrupt:
                click.echo("\nstopped", err=True)
            seconds = max(time.perf_counter() - opened, 1e-9)
        summary = {
            "recording": str(path) if path.is_file() else None,
            "frames": frames,
            "fps": frames / seconds,
            "generation_ms": generation_ms / max(1, batches),
            "resets": resets,
            "open_s": opened - started,
            "width": session.info.width,
            "height": session.info.height,
        }
    if as_json:
        click.echo(json.dumps(summary))
        return
    if summary["recording"]:
        click.echo(f"wrote {path}")
    click.echo(
        f"[{frames} frames {session.info.width}x{session.info.height} in {seconds:.2f} s, "
        f"{frames / seconds:.1f} frames/s, {resets} reset{'' if resets == 1 else 's'}; "
        f"opened in {opened - started:.2f} s]",
        err=True,
    )


_KEY_NAMES = {"space": 0x20, "shift": 0x10, "ctrl": 0x11, "left": 0x25, "up": 0x26,
              "right": 0x27, "down": 0x28}  # fmt: skip
"""Key names ``play --key`` takes beside letters, digits and virtual-key codes."""


def _key_code(key: str) -> int:
    """The Windows virtual-key code of a key name, a letter, a digit or a number."""
    name = key.strip().lower()
    if name in _KEY_NAMES:
        return _KEY_NAMES[name]
    if len(name) == 1 and name.isalnum():
        return ord(name.upper())
    if name.isdigit() and 1 <= int(name) <= 254:  # noqa: PLR2004 - the virtual-key range
        return int(name)
    raise click.BadParameter(
        f"{key!r} is not a key: use a letter, a digit, {', '.join(_KEY_NAMES)} or a code 1-254",
        param_hint="--key",
    )


def _request(fields: dict[str, Any]) -> GenerationRequest:
    from pydantic import ValidationError  # noqa: PLC0415

    from motorpool.types import REQUEST_ADAPTER  # noqa: PLC0415

    try:
        return REQUEST_ADAPTER.validate_python(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(problems) from exc


def _run_request(
    host: Host, info: ModelInfo, request: GenerationRequest, output: Path | None, *, as_json: bool
) -> None:
    from motorpool.errors import MotorpoolError  # noqa: PLC0415
    from motorpool.types import (  # noqa: PLC0415
        ErrorEvent,
        ImageResult,
        ProgressEvent,
        ResultEvent,
        TextResult,
        TokenEvent,
        VideoResult,
    )

    generation = host.stream(info.id, request)
    result = None
    with _progress_bars(enabled=not as_json) as on_progress:
        try:
            for event in generation:
                if isinstance(event, TokenEvent) and not as_json:
                    click.echo(event.text, nl=False)
                    sys.stdout.flush()
                elif isinstance(event, ProgressEvent):
                    on_progress(event)
                elif isinstance(event, ResultEvent):
                    result = event.result
                elif isinstance(event, ErrorEvent):
                    raise MotorpoolError.from_info(event.error)
        except KeyboardInterrupt:
            generation.cancel()
            generation.close()
            click.echo("\ncancelled", err=True)
            raise SystemExit(130) from None
    match result:
        case TextResult():
            if as_json:
                _print_json(result)
                return
            click.echo()
            rate = result.timings.output_tokens_per_s
            click.echo(
                f"[{result.usage.completion_tokens} tokens, "
                f"{f'{rate:.1f} tok/s, ' if rate else ''}finish: {result.finish_reason.value}]",
                err=True,
            )
        case ImageResult():
            paths = _write_outputs([i.png for i in result.images], output, ".png")
            _report_files(paths, result.timings.total_s, as_json=as_json)
        case VideoResult():
            suffix = ".mp4" if result.media_type == "video/mp4" else ".bin"
            paths = _write_outputs([result.video], output, suffix)
            _report_files(paths, result.timings.total_s, as_json=as_json)
        case None:
            raise MotorpoolError("the stream ended without a result")


def _write_outputs(blobs: Sequence[bytes], output: Path | None, suffix: str) -> list[Path]:
    base = output or Path(f"motorpool-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")
    paths = (
        [base]
        if len(blobs) == 1
        else [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(len(blobs))]
    )
    for path, blob in zip(paths, blobs, strict=True):
        partial = path.with_name(path.name + ".partial")
        try:
            partial.write_bytes(blob)
            partial.replace(path)  # never leave a half-written file under the real name
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from exc
    return paths


def _report_files(paths: list[Path], seconds: float, *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"files": [str(p) for p in paths], "seconds": seconds}))
        return
    for path in paths:
        click.echo(f"wrote {path}")
    click.echo(f"[{seconds:.2f} s]", err=True)


@contextmanager
def _progress_bars(*, enabled: bool) -> Generator[Callable[[ProgressEvent], None]]:
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


@main.command()
@json_option
def models(as_json: bool) -> None:
    """List the model aliases of the models file (MOTORPOOL_MODELS_FILE)."""
    with _host() as host:
        aliases = host.aliases
        if as_json:
            _print_json(list(aliases.values()))
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
        _table(["alias", "plugin", "source", "options", "flags"], rows)


@main.command()
@json_option
def ps(as_json: bool) -> None:
    """Load the models marked preload in the models file and show every model's state."""
    from motorpool.errors import MotorpoolError  # noqa: PLC0415

    with _host() as host:
        for alias, spec in host.aliases.items():
            if spec.preload:
                try:
                    host.load(alias)
                except MotorpoolError as exc:  # shown in the table as a failed model
                    click.echo(f"{alias}: {exc}", err=True)
        models = host.models()
        if as_json:
            _print_json(models)
            return
        if not models:
            click.echo("no models loaded (mark models `preload = true` in the models file)")
            return
        rows = [
            [
                m.id,
                m.plugin,
                m.status.value,
                _size(m.memory_bytes),
                f"{m.idle_s:.0f}s" if m.idle_s is not None else "-",
                m.error.message if m.error else "",
            ]
            for m in models
        ]
        _table(["model", "plugin", "state", "memory", "idle", "error"], rows)


@main.command()
@click.argument("plugin_names", nargs=-1, metavar="[PLUGIN]...")
@json_option
def check(plugin_names: tuple[str, ...], as_json: bool) -> None:
    """Smoke-run each installed plugin on a tiny model it builds itself."""
    from motorpool._check import self_check  # noqa: PLC0415

    with _host() as host:
        results = self_check(host, plugin_names)
    if as_json:
        _print_json(results)
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
            _table(["result", "plugin", "stage", "timings", "error"], rows)
        else:
            click.echo("no plugins to check")
    if not all(r.ok for r in results):
        raise SystemExit(1)


@main.command()
@click.option("--bind", help="Address to listen on (default 127.0.0.1; others need a key).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8420).")
@click.option("--api-key", envvar="MOTORPOOL_API_KEY", help="Require 'Authorization: Bearer KEY'.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow a browser origin.")
@click.option(
    "--model-dir",
    "model_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder clients may load local models from (repeatable).",
)
@click.option("--preload", multiple=True, help="Model to load at start (repeatable).")
@click.option("--parallel", type=click.IntRange(min=1), help="Requests at once per model.")
@click.option("--max-queue", type=click.IntRange(min=0), help="Requests waiting per model.")
@click.option("--biome-model", help="Model that Biome clients (/ws) get, whatever they name.")
def serve(  # noqa: PLR0917 - click passes each option by keyword
    bind: str | None,
    port: int | None,
    api_key: str | None,
    cors_origins: tuple[str, ...],
    model_dirs: tuple[Path, ...],
    preload: tuple[str, ...],
    parallel: int | None,
    max_queue: int | None,
    biome_model: str | None,
) -> None:
    """Serve the OpenAI-compatible and native API (and sessions) over HTTP."""
    try:
        from motorpool.server import serve as run_server  # noqa: PLC0415 - heavy, optional
    except ImportError as exc:
        from motorpool.errors import PluginUnavailable  # noqa: PLC0415

        raise PluginUnavailable(
            f"the server needs its extra dependencies ({exc.name} is missing)",
            hint="pip install 'motorpool[server]'",
        ) from exc
    from motorpool._settings import Settings  # noqa: PLC0415

    settings = _settings(
        Settings,
        bind=bind,
        port=port,
        api_key=api_key,
        cors_origins=cors_origins,
        model_dirs=model_dirs,
        parallel=parallel,
        max_queue=max_queue,
        biome_model=biome_model,
    )
    try:
        run_server(settings, preload=preload)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown: not an error
        click.echo("stopped", err=True)


@main.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of every wire type (for generating frontend types)."""
    from motorpool.server.schema import wire_schema  # noqa: PLC0415

    text = json.dumps(wire_schema(), indent=2, sort_keys=True)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")


def _size(count: int | None) -> str:
    from motorpool._memory import size  # noqa: PLC0415

    return "-" if count is None else size(count)
