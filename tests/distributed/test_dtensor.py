"""DTensor inputs on 2 and 3 gloo ranks with a CPU device mesh: one spawn per world size runs every
check of ``dist_checks_dtensor`` (values and gradients against torch on the full tensors, the full or
sliced class weight, bad placements)."""

from __future__ import annotations

import dist_checks_dtensor
import dist_harness
import pytest

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_dtensor_check_on_every_rank(world_size: int) -> None:
    failures = dist_harness.run(dist_checks_dtensor.checks, world_size)
    assert not failures, "\n\n".join(failures)
