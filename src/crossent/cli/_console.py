"""Terminal output shared by the commands: consoles, tables, progress bars and number formats."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text


def stdout(piped_width: int | None = None) -> Console:
    """Results go to stdout; colour and width follow the terminal (plain text when piped).

    ``piped_width`` sets the width when stdout is not a terminal, for tables too wide for rich's 80.
    """
    console = Console(highlight=False)
    if piped_width is not None and not console.is_terminal:
        console = Console(highlight=False, width=piped_width)
    return console


def progress(*fields: str, transient: bool = False, counter: bool = True) -> Progress:
    """A progress bar on stderr, so stdout stays clean for results and ``--json``.

    ``fields`` name task fields shown, as they are, after the counter: ``progress("loss")`` shows
    ``task.fields["loss"]``, which the caller formats (e.g. ``"loss 4.1234"``). The bar is hidden when
    stderr is not a terminal (logs, tests, pipes), and a ``transient`` bar is erased once done. With
    ``counter`` the bar shows "done/total" (steps), else a percentage (bytes or rows of a file).
    """
    console = Console(stderr=True)
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if counter else TaskProgressColumn(),
        *(TextColumn(f"{{task.fields[{name}]}}") for name in fields),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, console=console, disable=not console.is_terminal, transient=transient)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> Table:
    """A table whose columns from ``numeric_from`` on are right-aligned; cells are plain text, not markup."""
    out = Table(title=escape(title) if title else None, title_justify="left", title_style="bold")
    for index, name in enumerate(columns):
        out.add_column(escape(name), justify="right" if index >= numeric_from else "left")
    for row in rows:
        out.add_row(*(Text(cell) for cell in row))
    return out


def number(value: float, digits: int = 4) -> str:
    """Fixed-point with ``digits`` decimals; inf and nan as words; tiny magnitudes in scientific notation."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and abs(value) < 10.0**-digits:
        return f"{value:.{max(digits - 2, 1)}e}"
    return f"{value:.{digits}f}"


def count_or_number(value: float, digits: int = 6) -> str:
    """A whole number without decimals (a count), anything else as ``number``."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else number(value, digits)


def mebibytes(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"
