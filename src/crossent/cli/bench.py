"""``crossent bench``: the benchmark harness under the ``crossent`` command, with a progress bar and a plot.

The harness lives in the source repository's ``benchmarks/`` folder, next to ``src/``, and is not part
of the installed package; this command finds it in the current folder or in the source tree crossent
is installed from (an editable install) and runs it through its Python API (``benchmarks.run``), so
the table, the CSV and the measurements are the harness's own.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from crossent.cli import _console
from crossent.cli._errors import CLIError
from crossent.cli._inputs import output_file, torch_device

# src/crossent/cli/bench.py -> the repository root of an editable install
_SOURCE_ROOT = Path(__file__).resolve().parents[3]
TABLE_WIDTH = 200  # the harness's table has thirteen columns; piped output keeps each row on one line


def harness() -> ModuleType:
    """The ``benchmarks`` package, from the current folder or from the source tree of this install."""
    for root in (Path.cwd(), _SOURCE_ROOT):
        if (root / "benchmarks" / "__init__.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module("benchmarks")
    raise CLIError(
        "the benchmark harness comes with crossent's source, not with the installed package: "
        "run crossent bench from the root of a crossent checkout"
    )


def run(args: argparse.Namespace) -> int:
    benchmarks = harness()
    if args.list:
        return int(benchmarks.main(["--list"]))
    # paths given are checked before the benchmarks run, not after; their folders are never created
    if args.out is not None:
        output_file(args.out, "--out")
    if args.plot is not None:
        output_file(args.plot, "--plot", ".png")
    device = torch_device(args.device)
    environment = benchmarks.collect_environment(device)
    with _console.progress() as bar:
        task = bar.add_task("planning", total=None)

        def progress(index: int, total: int, label: str) -> None:
            bar.update(task, description=label, completed=index, total=total)

        try:
            rows = benchmarks.run(
                args.ops,
                args.shapes or benchmarks.DEFAULT_SHAPE_SETS,
                args.dtypes or benchmarks.DEFAULT_DTYPES,
                device=device,
                rounds=args.rounds,
                warmup=args.warmup,
                compiled=args.compile,
                memory=not args.no_memory,
                progress=progress,
            )
        except ValueError as exc:  # an unknown op, shape set, dtype or device
            raise CLIError(str(exc)) from None
        bar.update(task, description="done", completed=bar.tasks[0].total)
    out = _console.stdout(piped_width=TABLE_WIDTH)
    out.print(benchmarks.results_table(rows, environment))
    if not args.no_csv:
        path = Path(args.out) if args.out else benchmarks.default_csv_path(environment)
        try:
            benchmarks.write_csv(rows, environment, path)
        except OSError as exc:
            raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
        out.print(f"wrote {path}", markup=False)
    if args.plot is not None:
        from crossent.cli._plots import benchmark_ratios

        benchmark_ratios(rows, args.plot)
        out.print(f"wrote {args.plot}", markup=False)
    return 0
