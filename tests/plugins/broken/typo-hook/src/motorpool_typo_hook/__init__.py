"""A plugin with a misspelt hook name (motorpool_genrate): it must be failed with a suggestion."""

from motorpool import hookimpl


@hookimpl
def motorpool_probe(deep):
    from motorpool.types import ProbeReport

    return ProbeReport(ready=True)


@hookimpl
def motorpool_load(source, context):
    raise NotImplementedError


@hookimpl
def motorpool_genrate(model, request, context):
    raise NotImplementedError
