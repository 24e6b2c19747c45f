"""Run motorpool's benchmarks and print each result as a ratio of its baseline.

    uv run python bench/run.py                 # every bench/bench_*.py
    uv run python bench/run.py startup         # only bench/bench_startup.py
    uv run python bench/run.py --check         # exit 1 when a target is missed

A benchmark is a module ``bench/bench_<name>.py`` with ``def run() -> list[Row]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import Row, repeats

BENCH_DIR = Path(__file__).resolve().parent
COLUMNS = ("benchmark", "value", "baseline", "vs", "ratio", "target", "status", "note")


def available() -> list[str]:
    """Names of the benchmarks in ``bench/``, sorted."""
    return sorted(path.stem.removeprefix("bench_") for path in BENCH_DIR.glob("bench_*.py"))


def load(name: str) -> Callable[[], list[Row]]:
    """The ``run`` function of ``bench/bench_<name>.py``."""
    runner: Callable[[], list[Row]] = importlib.import_module(f"bench_{name}").run
    return runner


def table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table."""
    cells = [COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {1, 2, 4, 5}
    lines = [
        "  ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _cells(row: Row) -> tuple[str, ...]:
    ratio = row.ratio
    return (
        row.name,
        _quantity(row.value, row.unit),
        _quantity(row.baseline, row.unit),
        row.baseline_name,
        "" if ratio is None else f"{ratio:.2f}x",
        _target(row),
        row.status,
        row.note,
    )


def _target(row: Row) -> str:
    bounds = []
    if row.target is not None:
        bounds.append(f"< {_quantity(row.target, row.unit)}")
    if row.min_ratio is not None:
        bounds.append(f">= {row.min_ratio:.2f}x")
    return ", ".join(bounds)


def _quantity(value: float | None, unit: str) -> str:
    return "" if value is None else f"{value:.1f} {unit}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (all by default), print the table, return the exit code."""
    parser = argparse.ArgumentParser(description="Run motorpool's benchmarks.")
    parser.add_argument("names", nargs="*", metavar="name", help=f"one of {available()}")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--runs", type=int, help=f"repeats per measurement ({repeats()})")
    args = parser.parse_args(argv)
    names: list[str] = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available()}")
    if args.runs is not None:
        os.environ["BENCH_RUNS"] = str(args.runs)

    rows: list[Row] = []
    for name in names:
        start = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += load(name)()
        print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print(f"python {sys.version.split()[0]} ({sys.executable}), median of {repeats()} runs")
    print(table(rows))
    missed = [row.name for row in rows if row.missed]
    if missed:
        print(f"\nmissed: {', '.join(missed)}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
