"""A valid plugin whose hooks raise: the host must report each failure and carry on."""

from motorpool import hookimpl

PROBE_ERROR = "raising-hook probe fails on purpose"
LOAD_ERROR = "raising-hook load fails on purpose"


@hookimpl
def motorpool_probe(deep):
    raise RuntimeError(PROBE_ERROR)


@hookimpl
def motorpool_load(source, context):
    raise RuntimeError(LOAD_ERROR)


@hookimpl
def motorpool_generate(model, request, context):
    raise RuntimeError("raising-hook generate fails on purpose")
