"""``crossent bench``: the benchmark harness (``python -m benchmarks``) under the ``crossent`` command.

The harness lives in the source repository's ``benchmarks/`` folder, next to ``src/``, and is not
part of the installed package; this command finds it in the current folder or in the source tree
crossent is installed from (an editable install), and passes every option on to it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from crossent.cli._errors import CLIError

# src/crossent/cli/bench.py -> the repository root of an editable install
_SOURCE_ROOT = Path(__file__).resolve().parents[3]


def _harness_main() -> Callable[[list[str]], int]:
    """``benchmarks.cli.main``, from the current folder or from the source tree of this install."""
    for root in (Path.cwd(), _SOURCE_ROOT):
        if (root / "benchmarks" / "__main__.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            main: Callable[[list[str]], int] = importlib.import_module("benchmarks.cli").main
            return main
    raise CLIError(
        "the benchmark harness comes with crossent's source, not with the installed package: "
        "run crossent bench from the root of a crossent checkout"
    )


def run(args: argparse.Namespace) -> int:
    return int(_harness_main()(args.passed_on))
