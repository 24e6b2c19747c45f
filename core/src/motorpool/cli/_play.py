"""``motorpool play``: a world model played headless under fixed controls, recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from motorpool.cli._app import (
    default_output,
    json_option,
    model_options,
    model_spec,
    open_host,
    output_option,
    progress_bars,
)


@click.command()
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
@output_option("Record the session to this MP4", ext="mp4")
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
    path = (output or default_output(".mp4")).resolve()
    config = SessionConfig(realtime=realtime, prompt=prompt, record_path=str(path))
    with open_host() as host:
        spec = model_spec(host, model, plugin, options)
        started = time.perf_counter()
        with (
            progress_bars(enabled=not as_json) as on_progress,
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
