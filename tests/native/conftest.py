"""Fixtures of the native-kernel tests: one instruction-set level at a time, and torch's thread count."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from crossent.native import _library
from tests.native.native_env import LEVELS, level_library


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the kernels of one level loaded (skipped where the CPU cannot run it)."""
    monkeypatch.setattr(_library, "_loaded", level_library(request.param))
    return str(request.param)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Whatever thread count the test sets, the next test gets the one before."""
    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
