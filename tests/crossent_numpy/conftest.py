"""Shared set-up for the crossent.numpy tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Run the torch oracle on one thread: the inputs here are tiny, and intra-op threads only add
    synchronisation cost (tens of milliseconds per call on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
