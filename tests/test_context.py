"""``Context.load_uninterruptible``: the cancellation contract of a load that cannot stop."""

from __future__ import annotations

import pytest
from motorpool.engine import Context
from motorpool.errors import Cancelled
from motorpool.types import ProgressEvent


class Engine:
    """A loaded engine that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_load_is_one_load_step() -> None:
    events: list[ProgressEvent] = []
    engine = Engine()
    loaded = Context("load", on_progress=events.append).load_uninterruptible("m", lambda: engine)
    assert loaded is engine
    assert not engine.closed
    assert [(e.stage, e.step, e.total) for e in events] == [("load", 0, 1), ("load", 1, 1)]


def test_a_cancelled_operation_never_starts_the_load() -> None:
    context = Context("load")
    context.cancel()
    started: list[Engine] = []

    def load() -> Engine:
        started.append(Engine())
        return started[-1]

    with pytest.raises(Cancelled):
        context.load_uninterruptible("m", load)
    assert started == []


def test_a_load_cancelled_while_it_runs_is_closed() -> None:
    context = Context("load")
    engine = Engine()

    def load() -> Engine:
        context.cancel()  # the user cancels while the engine loads
        return engine

    with pytest.raises(Cancelled, match="loading m was cancelled"):
        context.load_uninterruptible("m", load)
    assert engine.closed
