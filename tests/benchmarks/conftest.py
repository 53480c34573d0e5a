"""The harness is the top-level ``benchmarks`` package of the repository, not part of the installed
crossent: put the repository root first on sys.path, whichever way pytest was started."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
