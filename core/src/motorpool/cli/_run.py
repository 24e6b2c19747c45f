"""``motorpool run``: one generation from the terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from motorpool.cli._app import (
    default_output,
    json_option,
    model_options,
    model_spec,
    open_host,
    output_option,
    print_json,
    progress_bars,
)

if TYPE_CHECKING:
    from motorpool._host import Host
    from motorpool.types import GenerationRequest, ModelInfo


@click.command()
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
@output_option("Where to write an image or video", ext="<ext>")
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
    with open_host() as host:
        spec = model_spec(host, model, plugin, options)
        with progress_bars(enabled=not as_json) as on_progress:
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
    with progress_bars(enabled=not as_json) as on_progress:
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
                print_json(result)
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
    base = output or default_output(suffix)
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
