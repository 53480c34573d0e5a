"""The one exception a command raises for bad user input: printed as one line, exit code 2."""

from __future__ import annotations

USAGE_ERROR = 2


class CLIError(Exception):
    """Bad input from the user (a file, a shape, a value): ``main`` prints the message and returns 2."""
