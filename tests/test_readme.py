"""The README's examples for the core (drop-in use, autocast, inplace_backward), native kernels and distillation
from hidden states run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()
SECTIONS = [
    "## The core: `crossent.functional` and `crossent.nn`",
    "## Native CPU kernels",
    "## Language-model options",
    "## Distillation from hidden states",
]


def _python_blocks(heading: str) -> list[str]:
    start = README.index(heading)
    level = heading.split(" ")[0]
    end = README.find(f"\n{level} ", start + len(heading))
    section = README[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("heading", SECTIONS)
def test_section_examples_run(heading, capsys):
    blocks = _python_blocks(heading)
    assert blocks, f"no python example under {heading!r}"
    for block in blocks:
        exec(compile(block, f"README.md: {heading}", "exec"), {"__name__": "__readme__"})
