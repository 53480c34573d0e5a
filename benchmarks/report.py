"""The results of a run: a table for the terminal and a CSV whose every row names machine, versions and commit."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .environment import Environment
from .paths import RESULTS_DIR
from .runner import MIB, Row
from .targets import MB, TARGETS, Check, Target, check_targets, gradient_bytes

CSV_COLUMNS: tuple[str, ...] = (
    *(field.name for field in dataclasses.fields(Row)),
    *(field.name for field in dataclasses.fields(Environment)),
)


def default_csv_path(environment: Environment) -> Path:
    """``benchmarks/results/<UTC timestamp>.csv``."""
    stamp = environment.timestamp.replace("-", "").replace(":", "")
    return RESULTS_DIR / f"{stamp}.csv"


def write_csv(
    rows: Sequence[Row],
    environment: Environment,
    path: Path,
    extra: Sequence[dict[str, object]] | None = None,
) -> None:
    """The rows and the run's environment, one line a row; ``extra``: more columns, one dict per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = (*CSV_COLUMNS, *(extra[0] if extra else ()))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for i, row in enumerate(rows):
            more = extra[i] if extra else {}
            writer.writerow({**dataclasses.asdict(row), **dataclasses.asdict(environment), **more})


def read_csv(path: Path) -> tuple[list[Row], Environment]:
    """The rows and environment of one run, as :func:`write_csv` wrote them (numbers parsed back).

    ValueError when the file has no rows, or rows of more than one run (different machine, versions,
    commit or start time).
    """
    with open(path, newline="") as file:
        records = list(csv.DictReader(file))
    if not records:
        raise ValueError(f"{path}: no benchmark rows")
    environments = {_parse(Environment, record) for record in records}
    if len(environments) != 1:
        raise ValueError(f"{path}: rows of {len(environments)} runs; give the CSV of one run")
    return [_parse(Row, record) for record in records], environments.pop()


def _parse(cls: type, record: dict[str, str]) -> Any:
    """``cls`` (a dataclass) from a CSV record: each field converted by its annotation; empty is None."""
    values: dict[str, object] = {}
    for field in dataclasses.fields(cls):
        text = record[field.name]
        kind = str(field.type)
        if text == "" and "None" in kind:
            values[field.name] = None
        elif kind.startswith("float"):
            values[field.name] = float(text)
        elif kind.startswith("int"):
            values[field.name] = int(text)
        else:
            values[field.name] = text
    return cls(**values)


def results_table(rows: Sequence[Row], environment: Environment) -> RenderableType:
    """The run's table, followed by one table of each kind of target (see ``benchmarks.targets``) it checked.

    The main table has one line per implementation, a rule between cases; the reference (torch) is
    each case's first line. Every table's caption names the machine, its CPU model first.
    """
    checks = check_targets(rows)
    tables = (
        main_table(rows, environment),
        speed_table(rows, environment, checks),
        memory_table(rows, environment, checks),
    )
    return Group(*(table for table in tables if table is not None))


def environment_line(environment: Environment) -> str:
    """Machine (CPU model first), versions, commit and time: the first line of every table's caption."""
    return (
        f"{environment.machine}, {environment.cores} cores, {environment.threads} torch threads · "
        f"Python {environment.python} · torch {environment.torch} · crossent {environment.crossent} "
        f"(native kernels: {environment.native or 'unknown'}) · "
        f"commit {environment.commit} · {environment.timestamp} · load average {environment.load}{_busy(environment)}"
    )


def _busy(environment: Environment) -> str:
    """A warning when more was running than there are cores: short calls' times are then unreliable."""
    try:
        load = float(environment.load.split()[0])
    except (IndexError, ValueError):
        return ""
    return f" (busy: above its {environment.cores} cores)" if load > environment.cores else ""


def _table(title: str, environment: Environment, legend: str, figures: Sequence[str]) -> Table:
    """A results table: the case's op, shape, dtype and impl, then right-aligned ``figures``, then a status."""
    table = Table(title=title, caption=f"{environment_line(environment)}\n{legend}")
    for header in ("op", "shape", "dtype", "impl"):
        table.add_column(header, no_wrap=True)
    for header in figures:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    return table


def main_table(rows: Sequence[Row], environment: Environment) -> Table:
    """One line per implementation, a rule between cases; the reference (torch) is each case's first line."""
    table = _table(
        "crossent against torch",
        environment,
        "ms: median per call · x: torch's median / this one (above 1 is faster) · "
        "peak: MiB above the inputs · err: max |x - float64 truth|",
        ("fwd+bwd ms", "x", "fwd ms", "x", "peak fwd+bwd", "peak fwd", "value err", "grad err"),
    )
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


def speed_table(rows: Sequence[Row], environment: Environment, checks: Sequence[Check]) -> Table | None:
    """crossent's forward+backward time over torch's on every case at the shape and dtype of a time target.

    Ops without a target of their own on those shapes are listed too, with their ratio and no verdict.
    None when the run has no such case.
    """
    targeted = {(target.shape.label, target.dtype) for target in TARGETS if target.kind == "time"}
    by_target = {(c.target.op, c.target.shape.label, c.target.dtype, c.target.impl): c for c in checks}
    cases = _cases(row for row in rows if (row.shape, row.dtype) in targeted)
    if not cases:
        return None
    table = _table(
        "crossent / torch, forward+backward time",
        environment,
        "best, median: the fastest and the median timed sample, per call · calls: calls per timed sample · "
        "ratio: this one's time / torch's (below 1 is faster) · the verdict goes by the ratio of the bests",
        ("torch best µs", "median", "this best µs", "median", "calls", "ratio best", "median", "target", "verdict"),
    )
    for reference, *others in cases:
        for row in others:
            check = by_target.get((row.op, row.shape, row.dtype, row.impl))
            target = check.target if check else None
            table.add_row(
                row.op,
                row.shape,
                row.dtype,
                row.impl,
                _microseconds(reference.full_best_ms),
                _microseconds(reference.full_ms),
                _microseconds(row.full_best_ms),
                _microseconds(row.full_ms),
                str(row.full_batch) if row.full_batch else "",
                _ratio(row.full_best_ms, reference.full_best_ms, target),
                _ratio(row.full_ms, reference.full_ms, None),
                target.label if target else "",
                _verdict(check),
                _status(row.status if row.status != "ok" or reference.status == "ok" else reference.status),
            )
    return table


def memory_table(rows: Sequence[Row], environment: Environment, checks: Sequence[Check]) -> Table | None:
    """Every implementation's peak extra memory on each case with a memory target; None if there is none."""
    memory_checks = [check for check in checks if check.target.kind == "memory"]
    if not memory_checks:
        return None
    device = next((row.device for row in rows), "cpu")
    how = (
        "RSS growth of one call in a fresh process"
        if device == "cpu"
        else "the CUDA caching allocator's peak during one call"
    )
    gradients = "; ".join(
        f"{check.target.shape.label} {check.target.dtype}: "
        f"{gradient_bytes(check.target.shape, getattr(torch, check.target.dtype).itemsize) / MIB:.0f} MiB"
        for check in memory_checks
    )
    table = _table(
        "memory contract: peak extra memory above the inputs, forward+backward",
        environment,
        f"{how}; the output and the gradients count (the gradients alone: {gradients})",
        ("fwd+bwd MiB", "fwd+bwd MB", "fwd MiB", "target", "verdict"),
    )
    for check in memory_checks:
        target = check.target
        table.add_section()
        for row in rows:
            if not target.applies_to(row):
                continue
            mine = row.impl == target.impl
            table.add_row(
                row.op,
                row.shape,
                row.dtype,
                row.impl,
                _number(row.full_peak_mib, "{:.1f}"),
                _number(None if row.full_peak_mib is None else row.full_peak_mib * MIB / MB, "{:.1f}"),
                _number(row.forward_peak_mib, "{:.1f}"),
                target.label if mine else "",
                _verdict(check) if mine else "",
                _status(check.why if mine and check.why else row.status),
            )
    return table


def _cases(rows: Iterable[Row]) -> list[list[Row]]:
    cases: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        cases.setdefault((row.op, row.shape, row.dtype), []).append(row)
    return list(cases.values())


def _microseconds(milliseconds: float | None) -> str:
    if milliseconds is None:
        return ""
    microseconds = milliseconds * 1e3
    return f"{microseconds:.1f}" if microseconds < 100 else f"{microseconds:.0f}"


def _ratio(milliseconds: float | None, reference_ms: float | None, target: Target | None) -> Text | str:
    if milliseconds is None or not reference_ms:
        return ""
    ratio = milliseconds / reference_ms
    style = "" if target is None else ("green" if target.holds(ratio) else "red")
    return Text(f"{ratio:.2f}x", style=style)


def _verdict(check: Check | None) -> Text | str:
    if check is None:
        return ""
    style = {"PASS": "green", "MISS": "bold red"}.get(check.verdict, "yellow")
    return Text(check.verdict, style=style)
