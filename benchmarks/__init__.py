"""The crossent benchmark harness: torch and crossent timed side by side in one run.

``python -m benchmarks`` from the repository root runs it (``--help`` for the options). The CLI's
``crossent bench`` calls the same functions::

    import benchmarks

    rows = benchmarks.run(["cross_entropy"], ["tiny"], ["float32"], rounds=3)
    environment = benchmarks.collect_environment("cpu")
    benchmarks.write_csv(rows, environment, benchmarks.default_csv_path(environment))

``benchmarks.check_targets(rows)`` checks the cases that have a target (``benchmarks.TARGETS``: the
``small`` set's time ratios, the fused loss's memory contract); ``results_table`` prints the verdicts.
"""

from .cli import main
from .environment import Environment, collect_environment
from .ops import OPS, Op, Subject, Unavailable
from .report import CSV_COLUMNS, default_csv_path, results_table, write_csv
from .runner import DEFAULT_DTYPES, Progress, Row, plan, run
from .shapes import DEFAULT_SHAPE_SETS, SHAPE_SETS, LinearShape, LogitsShape
from .targets import TARGETS, Check, Target, check_targets

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_DTYPES",
    "DEFAULT_SHAPE_SETS",
    "OPS",
    "SHAPE_SETS",
    "TARGETS",
    "Check",
    "Environment",
    "LinearShape",
    "LogitsShape",
    "Op",
    "Progress",
    "Row",
    "Subject",
    "Target",
    "Unavailable",
    "check_targets",
    "collect_environment",
    "default_csv_path",
    "main",
    "plan",
    "results_table",
    "run",
    "write_csv",
]
