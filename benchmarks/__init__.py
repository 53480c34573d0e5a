"""The crossent benchmark harness: torch and crossent timed side by side in one run.

``python -m benchmarks`` from the repository root runs it (``--help`` for the options). The CLI's
``crossent bench`` calls the same functions::

    import benchmarks

    rows = benchmarks.run(["cross_entropy"], ["tiny"], ["float32"], rounds=3)
    environment = benchmarks.collect_environment("cpu")
    benchmarks.write_csv(rows, environment, benchmarks.default_csv_path(environment))
"""

from .cli import main
from .environment import Environment, collect_environment
from .ops import OPS, Op, Subject, Unavailable
from .report import CSV_COLUMNS, default_csv_path, results_table, write_csv
from .runner import DEFAULT_DTYPES, Progress, Row, plan, run
from .shapes import DEFAULT_SHAPE_SETS, SHAPE_SETS, LinearShape, LogitsShape

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_DTYPES",
    "DEFAULT_SHAPE_SETS",
    "OPS",
    "SHAPE_SETS",
    "Environment",
    "LinearShape",
    "LogitsShape",
    "Op",
    "Progress",
    "Row",
    "Subject",
    "Unavailable",
    "collect_environment",
    "default_csv_path",
    "main",
    "plan",
    "results_table",
    "run",
    "write_csv",
]
