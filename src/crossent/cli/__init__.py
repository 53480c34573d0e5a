"""The ``crossent`` command line: ``demo``, ``explain``, ``eval``, ``bench`` and ``env``.

Run ``crossent --help`` (or ``python -m crossent --help``). The commands need the ``cli`` extra
(rich for tables and progress bars, matplotlib for plots); the library itself does not.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from crossent.cli._errors import USAGE_ERROR, CLIError
from crossent.cli._parser import build_parser

__all__ = ["main"]

# Subcommand -> module under crossent.cli holding its ``run(args) -> int``; imported only when run,
# so each command pays only for its own imports.
_COMMAND_MODULES = {
    "demo": "demo",
    "explain": "explain",
    "eval": "evaluate",
    "bench": "bench",
    "env": "env",
}


def _needed_extras(args: object) -> list[str]:
    """The ``cli`` extra's modules this command needs: rich always, matplotlib only when it draws."""
    draws = getattr(args, "command", None) == "demo" or getattr(args, "plot", None) is not None
    return ["rich", "matplotlib"] if draws else ["rich"]


def main(argv: list[str] | None = None) -> int:
    """Run one ``crossent`` command and return its exit code.

    0 on success; 2 on a usage error or bad input, after one line on stderr (no traceback);
    130 when interrupted; 141 when stdout was closed early. ``argv`` defaults to ``sys.argv[1:]``.

    Example:
        >>> from crossent.cli import main
        >>> main(["explain", "--no-such-option"])  # a usage error: usage on stderr, exit code 2
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage (code 2) or --help (code 0)
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    missing = [name for name in _needed_extras(args) if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"crossent {args.command}: needs {' and '.join(missing)}: pip install crossent[cli]",
            file=sys.stderr,
        )
        return USAGE_ERROR
    command = importlib.import_module(f"crossent.cli.{_COMMAND_MODULES[args.command]}")
    try:
        return int(command.run(args))
    except CLIError as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), "bad input")
        print(f"crossent {args.command}: error: {first_line}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"crossent {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``crossent eval ... --json | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
