"""examples/dtensor_tensor_parallel.py spawns 2 gloo ranks and shows the single-process loss, exactly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dtensor_tensor_parallel.py"


def test_example_matches_one_process_and_loss_parallel() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    values = dict(re.findall(r"^(.+?):\s+(-?\d+\.\d+)", done.stdout, flags=re.MULTILINE))
    reference = values["single process cross-entropy"]
    assert values["cross_entropy, DTensor logits"] == reference, done.stdout
    assert values["linear_cross_entropy, DTensor W"] == reference, done.stdout
    assert values["torch loss_parallel()"] == reference, done.stdout
    assert done.stdout.count("(Replicate(),), grad (Shard(dim=0),)") == 2, done.stdout
    errors = [float(e) for e in re.findall(r"max \|diff\| (\S+)", done.stdout)]
    assert len(errors) == 2 and max(errors) < 1e-12, done.stdout
