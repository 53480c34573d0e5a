"""``python -m benchmarks``: run the harness, print the table, write the CSV."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from .environment import collect_environment
from .ops import OPS
from .report import default_csv_path, results_table, write_csv
from .runner import DEFAULT_DTYPES, run
from .shapes import DEFAULT_SHAPE_SETS, SHAPE_SETS
from .targets import TARGETS
from .timing import DEFAULT_MIN_SAMPLE_S, DEFAULT_MIN_TIME_S


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
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="timed samples per implementation and mode, at least (default: 10; short calls get more, "
        "see --min-time-ms)",
    )
    parser.add_argument(
        "--min-sample-ms",
        type=float,
        default=DEFAULT_MIN_SAMPLE_S * 1e3,
        help="a timed sample batches as many calls as last this long; one call if a call lasts as long "
        f"(default: {DEFAULT_MIN_SAMPLE_S * 1e3:g})",
    )
    parser.add_argument(
        "--min-time-ms",
        type=float,
        default=DEFAULT_MIN_TIME_S * 1e3,
        help="more rounds than --rounds until each implementation's samples add up to this "
        f"(default: {DEFAULT_MIN_TIME_S * 1e3:g})",
    )
    parser.add_argument(
        "--threads", type=int, help="torch.set_num_threads for the run (default: torch's, OMP_NUM_THREADS or cores)"
    )
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
        for target in TARGETS:
            figure = "fwd+bwd time" if target.kind == "time" else "fwd+bwd peak memory"
            console.print(
                f"[bold]target[/bold]: {target.op} {target.shape.label} {target.dtype}, "
                f"{target.impl} {figure} {target.label}",
                highlight=False,
            )
        return 0
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
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
            min_sample_s=args.min_sample_ms / 1e3,
            min_time_s=args.min_time_ms / 1e3,
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
