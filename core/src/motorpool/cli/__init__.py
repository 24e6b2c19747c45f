"""The ``motorpool`` command: plugins, probe, run, play, models, ps, check, serve, schema."""

from motorpool.cli._app import main
from motorpool.cli._inspect import check, models, plugins, probe, ps, schema
from motorpool.cli._play import play
from motorpool.cli._run import run
from motorpool.cli._serve import serve

for _command in (plugins, probe, run, play, models, ps, check, serve, schema):
    main.add_command(_command)

__all__ = ["main"]
