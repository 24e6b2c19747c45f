"""A plugin that fails at import: discovery must report it as failed and go on."""

from motorpool import hookimpl

raise RuntimeError("motorpool-broken-import fails at import on purpose")


@hookimpl
def motorpool_probe(deep):  # never reached
    raise NotImplementedError
