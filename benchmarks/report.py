"""The results of a run: a table for the terminal and a CSV whose every row names machine, versions and commit."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table
from rich.text import Text

from .environment import Environment
from .paths import RESULTS_DIR
from .runner import Row

CSV_COLUMNS: tuple[str, ...] = (
    *(field.name for field in dataclasses.fields(Row)),
    *(field.name for field in dataclasses.fields(Environment)),
)


def default_csv_path(environment: Environment) -> Path:
    """``benchmarks/results/<UTC timestamp>.csv``."""
    stamp = environment.timestamp.replace("-", "").replace(":", "")
    return RESULTS_DIR / f"{stamp}.csv"


def write_csv(rows: Sequence[Row], environment: Environment, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**dataclasses.asdict(row), **dataclasses.asdict(environment)})


def results_table(rows: Sequence[Row], environment: Environment) -> Table:
    """One line per implementation, a rule between cases; the reference (torch) is each case's first line."""
    table = Table(
        title="crossent against torch",
        caption=(
            f"{environment.machine}, {environment.cores} cores, {environment.threads} torch threads · "
            f"Python {environment.python} · torch {environment.torch} · crossent {environment.crossent} · "
            f"commit {environment.commit} · {environment.timestamp}\n"
            "ms: median per call · x: torch's median / this one (above 1 is faster) · "
            "peak: MiB above the inputs · err: max |x - float64 truth|"
        ),
    )
    for header in ("op", "shape", "dtype", "impl"):
        table.add_column(header, no_wrap=True)
    for header in ("fwd+bwd ms", "x", "fwd ms", "x", "peak fwd+bwd", "peak fwd", "value err", "grad err"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    previous_case = None
    for row in rows:
        case = (row.op, row.shape, row.dtype)
        if previous_case is not None and case != previous_case:
            table.add_section()
        previous_case = case
        table.add_row(
            row.op,
            row.shape,
            row.dtype,
            row.impl,
            _milliseconds(row.full_ms),
            _speedup(row.full_speedup),
            _milliseconds(row.forward_ms),
            _speedup(row.forward_speedup),
            _number(row.full_peak_mib, "{:.0f}"),
            _number(row.forward_peak_mib, "{:.0f}"),
            _number(row.value_error, "{:.1e}"),
            _number(row.grad_error, "{:.1e}"),
            _status(row.status),
        )
    return table


def _milliseconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else spec.format(value)


def _speedup(value: float | None) -> Text | str:
    if value is None:
        return ""
    return Text(f"{value:.2f}x", style="green" if value >= 1.0 else "red")


def _status(status: str) -> Text:
    if status == "ok":
        return Text("")
    return Text(status, style="yellow" if status.startswith("not available") else "red")
