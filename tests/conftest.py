import os

import pytest
import torch
from hypothesis import settings

from crossent.ops import _layout

# CI runs a fixed sample of every property (reproducible); local runs keep exploring new ones
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=["one-block", "many-blocks"])
def block_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the default block size and with blocks of a few values, so that every
    kernel's block walk (row blocks and spatial blocks, ragged last block) is exercised."""
    if request.param == "many-blocks":
        monkeypatch.setattr(_layout, "BLOCK_ELEMENTS", 7)
    return str(request.param)
