"""Where the Triton tests run: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# Row layouts forced through the tuning, so tiny shapes reach every code path:
# the whole row in one block, a loop of blocks, and rows split into segments (two-stage).
LAYOUTS: dict[str, dict[str, int]] = {
    "fused": dict(fused_max_cols=64, stream_block=16, elementwise_block=64, min_programs=1),
    "streamed": dict(fused_max_cols=4, stream_block=4, elementwise_block=8, min_programs=1),
    "split": dict(fused_max_cols=4, stream_block=4, elementwise_block=8, min_programs=64),
}


def triton_device() -> torch.device:
    """The device of the Triton tests; skips the calling module when no backend can run them."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    pytest.skip("Triton kernels need a CUDA device or TRITON_INTERPRET=1", allow_module_level=True)


def layout_fixture(request: pytest.FixtureRequest) -> Iterator[str]:
    """Body of a parametrised ``layout`` fixture: run the test under one of ``LAYOUTS``."""
    from crossent.triton._common import use_tuning

    with use_tuning(**LAYOUTS[request.param]):
        yield request.param
