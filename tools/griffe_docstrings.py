"""A Griffe extension for the docs site: crossent's docstrings, written for ``help()``, rendered as Markdown.

The docstrings follow the Google style with a few reStructuredText habits that Markdown does not read:

* ``Example:`` (Griffe knows ``Examples:``): renamed, so that the doctests render as code;
* ``Shape:`` tables drawn as reST simple tables (``====  ====`` borders): turned into Markdown tables;
* ``:func:`name``` and the other reST roles: shown as code.

The source docstrings stay as they are; only what the site renders changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_BORDER = re.compile(r"^(\s*)(=+)((?:\s+=+)+)\s*$")
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


def _cells(line: str, count: int) -> list[str]:
    """A table row's cells: split at runs of two or more spaces (cells may overrun their border)."""
    cells = re.split(r"\s{2,}", line.strip())
    return [cell.replace("|", "\\|") for cell in cells] + [""] * (count - len(cells))


def _table(lines: list[str]) -> list[str]:
    """reST simple tables (border, rows, border; or border, header, border, rows, border) as Markdown."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = _BORDER.match(lines[index])
        ends = [j for j in range(index + 1, len(lines)) if _BORDER.match(lines[j])] if match else []
        if match is None or not ends:
            out.append(lines[index])
            index += 1
            continue
        indent, count = match.group(1), len(re.findall(r"=+", lines[index]))
        first = ends[0]
        if len(ends) > 1 and first == index + 2 and ends[1] > first + 1:  # a header row between two borders
            header, body, index = [lines[index + 1]], lines[first + 1 : ends[1]], ends[1] + 1
        else:
            header, body, index = [], lines[index + 1 : first], first + 1
        head = _cells(header[0], count) if header else [" "] * count
        out.append(indent + "| " + " | ".join(head) + " |")
        out.append(indent + "|" + "|".join("---" for _ in head) + "|")
        out.extend(indent + "| " + " | ".join(_cells(line, count)) + " |" for line in body if line.strip())
    return out


def rendered(text: str) -> str:
    """A docstring's text as the site renders it."""
    text = re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", text, flags=re.M)
    text = _ROLE.sub(r"`\1`", text)
    return "\n".join(_table(text.split("\n")))


class DocstringsForMarkdown(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rendered(obj.docstring.value)
