"""A plugin whose motorpool_load takes an argument the hookspec does not have.

pluggy rejects it when it is registered; discovery must report it as failed.
"""

from motorpool import hookimpl


@hookimpl
def motorpool_probe(deep):
    from motorpool.types import ProbeReport

    return ProbeReport(ready=True)


@hookimpl
def motorpool_load(source, context, extra_arg):
    raise NotImplementedError


@hookimpl
def motorpool_generate(model, request, context):
    raise NotImplementedError
