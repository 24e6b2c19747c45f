"""A plugin that imports a dependency it declares but that is not installed."""

import motorpool_nonexistent_dep_xyz  # declared in pyproject.toml, never installed
from motorpool import hookimpl


@hookimpl
def motorpool_probe(deep):
    return motorpool_nonexistent_dep_xyz.probe(deep)
