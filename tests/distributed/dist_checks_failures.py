"""Multi-rank checks that bad input on one rank fails every rank, promptly and clearly.

Each check ends with the ranks in step (every rank raised after the same collective), so the next
check can use the process group again; ``check_group_still_works`` proves it at the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.distributed as dist
from dist_cases import LAYOUTS, generator, rank, shard, world
from dist_harness import Check

from crossent.distributed import (
    PeerError,
    _consensus,
    count_targets,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

WIDTHS = {1: [7], 2: [4, 3], 3: [3, 2, 2]}


def expect(error: type[Exception], pattern: str, call: Callable[[], object]) -> None:
    try:
        call()
    except error as exc:
        assert re.search(pattern, str(exc)), f"{error.__name__} message {str(exc)!r} does not match {pattern!r}"
        return
    except Exception as exc:
        raise AssertionError(f"expected {error.__name__}({pattern!r}), got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"expected {error.__name__}({pattern!r}), nothing was raised")


def logits() -> torch.Tensor:
    return shard(torch.randn(4, 7, dtype=torch.float64, generator=generator(7)), WIDTHS[world()], 1)


def last() -> bool:
    return rank() == world() - 1


def peer_fails(error: type[Exception], pattern: str, call: Callable[[], object]) -> None:
    """The last rank raises ``error``; every other rank raises PeerError naming it."""
    if last():
        expect(error, pattern, call)
    else:
        expect(PeerError, rf"rank\(s\) \[{world() - 1}\]", call)


def check_target_out_of_range_on_one_rank(pg: dist.ProcessGroup) -> None:
    """The rank with the bad id names it; the others see that the targets differ between ranks."""
    target = torch.tensor([0, 9 if last() else 1, 2, 3])
    call = lambda: vocab_parallel_cross_entropy(logits(), target, process_group=pg)  # noqa: E731
    if last():
        expect(IndexError, r"^Target 9 is out of bounds\.$", call)
    elif world() > 1:
        expect(ValueError, "different targets or options", call)


def check_target_out_of_range_everywhere(pg: dist.ProcessGroup) -> None:
    for bad in (-5, 7):
        target = torch.tensor([0, bad, -100, 3])
        expect(
            IndexError,
            rf"^Target {bad} is out of bounds\.$",
            lambda t=target: vocab_parallel_cross_entropy(logits(), t, label_smoothing=0.1, process_group=pg),
        )


def check_bad_weight_on_one_rank(pg: dist.ProcessGroup) -> None:
    width = WIDTHS[world()][rank()]
    weight = torch.ones(width + 1 if last() else width, dtype=torch.float64)
    peer_fails(
        RuntimeError,
        r"weight must be this rank's slice .* shape: \[",
        lambda: vocab_parallel_cross_entropy(logits(), torch.tensor([0, 1, 2, 3]), weight, process_group=pg),
    )


def check_bad_dtype_on_one_rank(pg: dist.ProcessGroup) -> None:
    x = logits().long() if last() else logits()
    peer_fails(
        NotImplementedError,
        "not implemented for 'Long'",
        lambda: vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2, 3]), process_group=pg),
    )


def check_bad_reduction_on_one_rank(pg: dist.ProcessGroup) -> None:
    reduction = "average" if last() else "mean"
    peer_fails(
        ValueError,
        "average is not a valid value for reduction",
        lambda: vocab_parallel_cross_entropy(
            logits(), torch.tensor([0, 1, 2, 3]), reduction=reduction, process_group=pg
        ),
    )


def check_bad_normalizer_on_one_rank(pg: dist.ProcessGroup) -> None:
    normalizer: object = "4" if last() else 4
    peer_fails(
        TypeError,
        "normalizer must be a number or a Tensor, not str",
        lambda: vocab_parallel_cross_entropy(
            logits(), torch.tensor([0, 1, 2, 3]), normalizer=normalizer, process_group=pg
        ),
    )


def check_different_targets(pg: dist.ProcessGroup) -> None:
    """Valid but different class ids per rank would give a silently wrong loss: every rank refuses."""
    if world() == 1:
        return
    target = torch.tensor([0, 1, 2, 4 if last() else 3])
    expect(
        ValueError,
        "different targets or options",
        lambda: vocab_parallel_cross_entropy(logits(), target, process_group=pg),
    )


def check_different_options(pg: dist.ProcessGroup) -> None:
    if world() == 1:
        return
    target = torch.tensor([0, 1, 2, 3])
    expect(
        ValueError,
        "different targets or options",
        lambda: vocab_parallel_cross_entropy(logits(), target, label_smoothing=0.1 * last(), process_group=pg),
    )
    expect(
        ValueError,
        "different targets or options",
        lambda: vocab_parallel_cross_entropy(logits(), target, ignore_index=3 if last() else -100, process_group=pg),
    )


def check_count_targets_bad_input_on_one_rank(pg: dist.ProcessGroup) -> None:
    target = torch.tensor([0.0, 1.0]) if last() else torch.tensor([0, 1])
    peer_fails(TypeError, "integer dtype", lambda: count_targets(target, process_group=pg))
    weight = torch.ones(2 if last() else 3)
    peer_fails(
        IndexError,
        "Target 2 is out of bounds",
        lambda: count_targets(torch.tensor([2, 0]), weight=weight, process_group=pg),
    )


def check_linear_bad_classifier_on_one_rank(pg: dist.ProcessGroup) -> None:
    h = torch.randn(4, 3, dtype=torch.float64, generator=generator(9))
    rows = torch.randn(WIDTHS[world()][rank()], 4 if last() else 3, dtype=torch.float64)
    peer_fails(
        RuntimeError,
        "input has 3 features but linear_weight has 4",
        lambda: vocab_parallel_linear_cross_entropy(h, rows, torch.tensor([0, 1, 2, 3]), process_group=pg),
    )


def check_linear_input_grad_reduction_must_agree(pg: dist.ProcessGroup) -> None:
    """A rank that would skip the backward's all-reduce would leave the others waiting in it."""
    if world() == 1:
        return
    h = torch.randn(4, 3, dtype=torch.float64, generator=generator(9), requires_grad=True)
    rows = torch.randn(WIDTHS[world()][rank()], 3, dtype=torch.float64)
    expect(
        ValueError,
        "different targets or options",
        lambda: vocab_parallel_linear_cross_entropy(
            h, rows, torch.tensor([0, 1, 2, 3]), process_group=pg, reduce_input_grad=not last()
        ),
    )


def check_accelerator_path(pg: dist.ProcessGroup) -> None:
    """On accelerators the checks are device-side asserts (no host read); run that path on CPU, where
    torch._assert_async raises at once: every rank still fails, none waits."""
    saved = _consensus.reads_on_host
    _consensus.reads_on_host = lambda t: False
    try:
        width = WIDTHS[world()][rank()]
        weight = torch.ones(width + 1 if last() else width, dtype=torch.float64)
        peer_fails_with = "ranks disagree" if world() > 1 else "weight must be"
        if last():
            expect(RuntimeError, "weight must be this rank's slice", lambda: _call_with_weight(pg, weight))
        else:
            expect(RuntimeError, peer_fails_with, lambda: _call_with_weight(pg, weight))
        if world() > 1:
            target = torch.tensor([0, 1, 2, 4 if last() else 3])
            expect(
                RuntimeError, "ranks disagree", lambda: vocab_parallel_cross_entropy(logits(), target, process_group=pg)
            )
        bad = torch.tensor([0.0]) if last() else torch.tensor([0])
        expected = (TypeError, "integer dtype") if last() else (RuntimeError, "rejected its input")
        expect(*expected, lambda: count_targets(bad, process_group=pg))
    finally:
        _consensus.reads_on_host = saved


def _call_with_weight(pg: dist.ProcessGroup, weight: torch.Tensor) -> torch.Tensor:
    return vocab_parallel_cross_entropy(logits(), torch.tensor([0, 1, 2, 3]), weight, process_group=pg)


def check_group_still_works(pg: dist.ProcessGroup) -> None:
    """After all the failures above, the ranks are still in step."""
    for widths in LAYOUTS[world()]:
        x = shard(torch.randn(4, 7, dtype=torch.float64, generator=generator(8)), widths, 1)
        out = vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2, 3]), process_group=pg)
        assert torch.isfinite(out)


def checks() -> list[tuple[str, Check]]:
    return [
        (f.__name__, f)
        for f in (
            check_target_out_of_range_on_one_rank,
            check_target_out_of_range_everywhere,
            check_bad_weight_on_one_rank,
            check_bad_dtype_on_one_rank,
            check_bad_reduction_on_one_rank,
            check_bad_normalizer_on_one_rank,
            check_different_targets,
            check_different_options,
            check_count_targets_bad_input_on_one_rank,
            check_linear_bad_classifier_on_one_rank,
            check_linear_input_grad_reduction_must_agree,
            check_accelerator_path,
            check_group_still_works,
        )
    ]
