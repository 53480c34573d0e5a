"""``python -m benchmarks``: run the harness, print the table, write the CSV."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from .environment import collect_environment
from .ops import OPS
from .report import default_csv_path, results_table, write_csv
from .runner import DEFAULT_DTYPES, run
from .shapes import DEFAULT_SHAPE_SETS, SHAPE_SETS


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time crossent against torch side by side: speed, peak memory and error, per op, shape and dtype.",
    )
    parser.add_argument("--ops", type=_names, help="comma-separated op names (default: all; see --list)")
    parser.add_argument(
        "--shapes",
        type=_names,
        default=list(DEFAULT_SHAPE_SETS),
        help=f"comma-separated shape sets (default: {','.join(DEFAULT_SHAPE_SETS)}; see --list)",
    )
    parser.add_argument(
        "--dtypes", type=_names, default=list(DEFAULT_DTYPES), help=f"default: {','.join(DEFAULT_DTYPES)}"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--rounds", type=int, default=10, help="timed calls per implementation and mode (default: 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before them (default: 1)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd torch as a baseline")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--out", type=Path, help="CSV path (default: benchmarks/results/<UTC timestamp>.csv)")
    output.add_argument("--no-csv", action="store_true", help="print the table only")
    parser.add_argument("--list", action="store_true", help="list the ops and shape sets, then exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from command-line arguments; the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    # Piped or redirected output has no width to fit; a wide one keeps each row on one line.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.list:
        for op in OPS.values():
            console.print(f"[bold]{op.name}[/bold]: {op.summary}")
        for name, shapes in SHAPE_SETS.items():
            console.print(f"[bold]{name}[/bold]: {', '.join(shape.label for shape in shapes)}")
        return 0
    environment = collect_environment(args.device)
    status = Console(stderr=True)
    try:
        rows = run(
            args.ops,
            args.shapes,
            args.dtypes,
            device=args.device,
            rounds=args.rounds,
            warmup=args.warmup,
            compiled=args.compile,
            memory=not args.no_memory,
            progress=lambda index, total, label: status.print(f"[{index + 1}/{total}] {label}", highlight=False),
        )
    except ValueError as exc:
        parser.error(str(exc))
    console.print(results_table(rows, environment))
    if not args.no_csv:
        path = args.out or default_csv_path(environment)
        write_csv(rows, environment, path)
        console.print(f"wrote {path}", highlight=False)
    return 0
