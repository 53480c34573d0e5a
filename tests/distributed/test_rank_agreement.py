"""Bad input on one rank, ranks that disagree, and double backward, on 2 and 3 gloo ranks.

Every rank must raise a clear Python exception at the same point: the rank with the bad input the
exception torch raises for it, the others ``PeerError``; ranks that disagree all ``ValueError``
naming what differs. None may hang, be aborted by gloo, or return a silently wrong loss or
gradient. One spawn per world size runs every check of ``dist_checks_failures`` (started by the
first test that needs it); each test here reads the outcome of its own check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dist_checks_failures as failures
import dist_harness
import pytest

pytestmark = pytest.mark.distributed

WORLD_SIZES = [2, 3]


@pytest.fixture(scope="module")
def outcome() -> Iterator[Callable[[int, str], list[str]]]:
    """``outcome(world_size, check)``: the failure messages of one check (empty when it passed)."""
    runs: dict[int, dict[str, list[str]]] = {}

    def of(world_size: int, check: str) -> list[str]:
        if world_size not in runs:
            runs[world_size] = dist_harness.run_each(failures.checks, world_size)
        return runs[world_size][check]

    yield of


def passed(messages: list[str]) -> None:
    assert not messages, "\n\n".join(messages)


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("variant", failures.BAD_INPUTS)
def test_bad_input_on_one_rank_fails_every_rank(
    outcome: Callable[[int, str], list[str]], world_size: int, variant: str
) -> None:
    """Not a tensor, 0-dim, a wrong dtype, ndim, shape or device, a bad option: torch's exception on that rank."""
    passed(outcome(world_size, f"bad_input[{variant}]"))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("variant", failures.DISAGREEMENTS)
def test_ranks_that_disagree_all_raise(outcome: Callable[[int, str], list[str]], world_size: int, variant: str) -> None:
    """Each option that must agree, changed on one rank (normalizer included): ValueError naming it, on every rank."""
    passed(outcome(world_size, f"disagreement[{variant}]"))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("variant", failures.AGREEMENTS)
def test_ranks_may_differ_where_the_loss_does_not(
    outcome: Callable[[int, str], list[str]], world_size: int, variant: str
) -> None:
    passed(outcome(world_size, f"agreement[{variant}]"))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("variant", failures.COLLISIONS)
def test_colliding_targets_are_told_apart(
    outcome: Callable[[int, str], list[str]], world_size: int, variant: str
) -> None:
    """Targets that a 24-bit digest confused (0 and 128 swapped at positions 0 and 65536, ...)."""
    passed(outcome(world_size, f"collision[{variant}]"))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("variant", failures.CREATE_GRAPH)
def test_create_graph_is_refused(outcome: Callable[[int, str], list[str]], world_size: int, variant: str) -> None:
    """A gradient penalty through a vocab-parallel loss raises instead of silently dropping the penalty."""
    passed(outcome(world_size, f"create_graph[{variant}]"))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("variant", failures.CREATE_GRAPH_ON_ONE_RANK)
def test_create_graph_on_one_rank_leaves_no_rank_waiting(
    outcome: Callable[[int, str], list[str]], world_size: int, variant: str
) -> None:
    passed(outcome(world_size, f"create_graph_on_one_rank[{variant}]"))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("check", [f.__name__ for f in failures.SINGLE])
def test_failure_check(outcome: Callable[[int, str], list[str]], world_size: int, check: str) -> None:
    passed(outcome(world_size, check))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_group_still_works_after_every_failure(outcome: Callable[[int, str], list[str]], world_size: int) -> None:
    passed(outcome(world_size, failures.check_group_still_works.__name__))
