"""``motorpool serve``: the HTTP and WebSocket server."""

from __future__ import annotations

from pathlib import Path

import click

from motorpool.cli._app import load_settings


@click.command()
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

    settings = load_settings(
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
