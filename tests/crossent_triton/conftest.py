"""Shared fixtures of the Triton tests (the interpreter runs each program as NumPy: keep shapes tiny)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.crossent_triton.triton_env import LAYOUTS, layout_fixture


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per row layout (fused, streamed, split)."""
    yield from layout_fixture(request)


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """The torch oracle on one thread: inputs are tiny and intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
