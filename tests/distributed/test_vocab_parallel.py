"""Vocab-parallel and data-parallel losses on 2 and 3 gloo ranks spawned on localhost.

Each world size is one spawn that runs every check (see ``dist_suites``): the loss and every gradient
against torch on the unsharded tensors, the collective count, the gradient-accumulation recipe, and
bad input on one rank failing every rank. A failure message names the check and the rank.
"""

from __future__ import annotations

import dist_harness
import dist_suites
import pytest

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_check_on_every_rank(world_size: int) -> None:
    failures = dist_harness.run(dist_suites.all_checks, world_size)
    assert not failures, "\n\n".join(failures)
