"""The single-process examples in examples/ run as their docstrings say (vocab_parallel.py runs under
torchrun in tests/distributed/test_example.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_train_classifier_runs_and_agrees_with_torch() -> None:
    command = [sys.executable, str(EXAMPLES / "train_classifier.py"), "--steps", "20"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    gap = re.search(r"loss difference over training: (\S+)", done.stdout)
    assert gap is not None, done.stdout
    assert float(gap.group(1)) < 1e-5
