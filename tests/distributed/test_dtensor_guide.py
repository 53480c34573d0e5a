"""docs/guide/dtensor.md: its python blocks run, alone and top to bottom as one script, and print
what their comments say; the step it shows is the example's own code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "guide" / "dtensor.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE, re.S)


def printed(block: str) -> list[str]:
    """What the block's ``print(...)  # output`` lines say they print."""
    return re.findall(r"^print\(.*\)  # (.*)$", block, re.M)


def run(code: str) -> str:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs_alone_and_prints_its_comments(index: int) -> None:
    block = BLOCKS[index]
    assert run(block).splitlines() == printed(block)


def test_blocks_run_as_one_script() -> None:
    assert len(BLOCKS) >= 2
    assert run("\n".join(BLOCKS)).splitlines() == [line for block in BLOCKS for line in printed(block)]


def test_the_step_shown_is_the_examples() -> None:
    (step,) = re.findall(r"```text\n(.*?)```", GUIDE, re.S)
    assert step in (ROOT / "examples" / "dtensor_tensor_parallel.py").read_text()
