"""Fixtures for the command-line tests: run ``main(argv)`` in-process or ``python -m crossent`` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from crossent.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def one_line_error(self) -> str:
        """The single stderr line of a usage error (exit code 2), checked to be exactly that."""
        assert self.code == 2, (self.code, self.out, self.err)
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``cli("eval", "a.npy", "b.npy")`` runs ``main`` in-process and returns exit code, stdout, stderr."""
    monkeypatch.setenv("COLUMNS", "160")  # rich's width when not on a terminal: keep table rows on one line

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def _subprocess(command: list[str]) -> Result:
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def module_cli() -> Callable[..., Result]:
    """``module_cli("env")`` runs ``python -m crossent env`` in a fresh interpreter."""
    return lambda *argv: _subprocess([sys.executable, "-m", "crossent", *argv])


@pytest.fixture
def script_cli() -> Callable[..., Result]:
    """``script_cli("env")`` runs the installed ``crossent`` console script (pyproject's entry point)."""
    script = Path(sys.executable).parent / "crossent"
    if not script.exists():
        pytest.skip(f"the crossent console script is not installed next to {sys.executable}")
    return lambda *argv: _subprocess([str(script), *argv])
