"""examples/vocab_parallel.py runs under torchrun on 2 CPU ranks and shows matching losses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vocab_parallel.py"


def test_example_runs_under_torchrun() -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(EXAMPLE)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    values = dict(re.findall(r"^(.+?):\s+(-?\d+\.\d+)", done.stdout, flags=re.MULTILINE))
    reference = values["single process cross-entropy"]
    assert values["vocab-parallel cross-entropy"] == reference
    assert values["vocab-parallel linear CE"] == reference
    assert values["sum of micro-batch losses / global count"] == values["full-batch mean"]
    assert values["mean of per-micro-batch means (the bug)"] != values["full-batch mean"]
