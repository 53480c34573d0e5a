"""Multi-rank checks of vocab_parallel_cross_entropy against torch on the unsharded tensors."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_cases import (
    LAYOUTS,
    Case,
    assert_close,
    assert_same_on_every_rank,
    case_grid,
    generator,
    shard,
    tiny_blocks,
    world,
)
from dist_harness import Check

from crossent.distributed import vocab_parallel_cross_entropy

SHAPES = [(5, 7), (2, 7, 3, 2), (7,), (0, 7)]
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6}


def compare(
    case: Case,
    widths: list[int],
    pg: dist.ProcessGroup,
    dtype: torch.dtype,
    normalizer: object = None,
    loss_fn: Callable[..., torch.Tensor] = vocab_parallel_cross_entropy,
) -> None:
    """Loss on every rank and every gradient of this rank's shard equal torch's on the full tensors."""
    x, t, w = case.tensors(dtype)
    cd = case.class_dim
    x_full = x.clone().requires_grad_()
    t_full = t.clone().requires_grad_() if case.probability else t
    w_full = w.clone().requires_grad_() if (w is not None and case.probability) else w
    reduction = "sum" if normalizer is not None else case.reduction
    expected = F.cross_entropy(
        x_full,
        t_full,
        w_full,
        ignore_index=case.ignore_index,
        reduction=reduction,
        label_smoothing=case.label_smoothing,
    )
    if normalizer is not None:
        expected = expected / normalizer
    x_local = shard(x, widths, cd).clone().requires_grad_()
    t_local = shard(t, widths, cd).clone().requires_grad_() if case.probability else t
    w_local = None if w is None else shard(w, widths, 0).clone().requires_grad_(case.probability)
    actual = loss_fn(
        x_local,
        t_local,
        w_local,
        ignore_index=case.ignore_index,
        reduction=case.reduction,
        label_smoothing=case.label_smoothing,
        process_group=pg,
        normalizer=normalizer,
    )
    what = f"{case} widths={widths} {dtype}"
    rtol = TOLERANCE[dtype]
    assert_close(actual, expected, rtol, f"loss {what}")
    assert_same_on_every_rank(actual.detach(), f"loss {what}")

    upstream = torch.randn(expected.shape, dtype=expected.dtype, generator=torch.Generator().manual_seed(case.seed))
    (expected * upstream).sum().backward()
    (actual * upstream).sum().backward()
    assert_close(x_local.grad, shard(x_full.grad, widths, cd), rtol, f"input grad {what}")
    if case.probability:
        assert_close(t_local.grad, shard(t_full.grad, widths, cd), rtol, f"target grad {what}")
        if w_local is not None:
            assert_close(w_local.grad, shard(w_full.grad, widths, 0), rtol, f"weight grad {what}")


def check_grid(pg: dist.ProcessGroup) -> None:
    """float64, 1e-12: every shape x target kind x weight x smoothing x reduction, shard layouts in turn."""
    layouts = LAYOUTS[world()]
    for i, case in enumerate(case_grid(SHAPES)):
        # rotate so that every reduction (the innermost grid axis) meets every layout
        with tiny_blocks((i // 2) % 2 == 1):
            compare(case, layouts[(i + i // 3) % len(layouts)], pg, torch.float64)


def check_float32(pg: dist.ProcessGroup) -> None:
    """float32, 1e-6 relative, on a larger vocabulary split unevenly."""
    widths = {1: [1000], 2: [600, 400], 3: [500, 1, 499]}[world()]
    for case in case_grid([(16, 1000)]):
        compare(case, widths, pg, torch.float32)


def check_normalizer(pg: dist.ProcessGroup) -> None:
    """normalizer= divides the summed loss, for 'sum' and 'mean' alike, number or tensor."""
    widths = LAYOUTS[world()][0]
    for case in case_grid([(5, 7)]):
        if case.reduction != "none":
            compare(case, widths, pg, torch.float64, normalizer=3.5)
            compare(case, widths, pg, torch.float64, normalizer=torch.tensor(6))


def check_extreme_logits(pg: dist.ProcessGroup) -> None:
    """-inf logits (on the target and elsewhere), +inf, NaN, 1e4 offsets, a row far below 0 (so a shard
    without classes must not shift its empty sums by 0): torch's values and NaNs."""
    x = torch.tensor(
        [
            [0.0, float("-inf"), 1.0, 2.0, -3.0, 0.5, 1.5],
            [1e4, 1e4 - 1, 1e4 + 2, 1e4, 1e4, 1e4 - 5, 1e4],
            [0.0, 1.0, float("inf"), 2.0, 0.0, 0.0, 0.0],
            [float("-inf")] * 7,
            [0.0, 1.0, float("nan"), 2.0, 0.0, 0.0, 0.0],
            [-1e4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [-1000.0, -1001.0, -1002.0, -1003.0, -1004.0, -1005.0, -1006.0],
        ],
        dtype=torch.float64,
    )
    for target in (torch.tensor([0, 2, 1, 0, 3, 0, 0]), torch.tensor([1, 6, 1, 0, 3, 0, 6])):
        for eps in (0.0, 0.3, 1.0):
            for reduction in ("none", "sum"):
                for widths in LAYOUTS[world()]:
                    x_full = x.clone().requires_grad_()
                    expected = F.cross_entropy(x_full, target, reduction=reduction, label_smoothing=eps)
                    x_local = shard(x, widths, 1).clone().requires_grad_()
                    actual = vocab_parallel_cross_entropy(
                        x_local, target, reduction=reduction, label_smoothing=eps, process_group=pg
                    )
                    what = f"extreme target={target.tolist()} eps={eps} {reduction} {widths}"
                    assert_close(actual, expected, 1e-12, what)
                    expected.sum().backward()
                    actual.sum().backward()
                    assert_close(x_local.grad, shard(x_full.grad, widths, 1), 1e-12, f"grad {what}")


def check_all_ignored(pg: dist.ProcessGroup) -> None:
    """Every target ignored: 'mean' is nan with zero gradients, 'sum' is 0."""
    x = torch.randn(4, 7, dtype=torch.float64, generator=generator(2))
    target = torch.full((4,), -100)
    for widths in LAYOUTS[world()]:
        for reduction, weighted in (("mean", False), ("mean", True), ("sum", True)):
            w = shard(torch.rand(7, dtype=torch.float64, generator=generator(3)), widths, 0) if weighted else None
            x_local = shard(x, widths, 1).clone().requires_grad_()
            out = vocab_parallel_cross_entropy(
                x_local, target, w, reduction=reduction, label_smoothing=0.2, process_group=pg
            )
            assert torch.isnan(out) if reduction == "mean" else out == 0, f"{reduction}: {out}"
            out.backward()
            assert torch.equal(x_local.grad, torch.zeros_like(x_local)), x_local.grad


def check_low_precision(pg: dist.ProcessGroup) -> None:
    """bfloat16 / float16 logits: statistics in float32, output in the input dtype, close to float64."""
    widths = LAYOUTS[world()][0]
    for dtype in (torch.bfloat16, torch.float16):
        for case in case_grid([(6, 7)]):
            x, t, w = case.tensors(dtype)
            if case.probability:
                continue
            expected = F.cross_entropy(
                x.double(),
                t,
                None if w is None else w.double(),
                ignore_index=case.ignore_index,
                reduction=case.reduction,
                label_smoothing=case.label_smoothing,
            )
            actual = vocab_parallel_cross_entropy(
                shard(x, widths, 1),
                t,
                None if w is None else shard(w, widths, 0),
                case.ignore_index,
                case.reduction,
                case.label_smoothing,
                process_group=pg,
            )
            assert actual.dtype == dtype
            torch.testing.assert_close(actual.double(), expected, rtol=1e-2, atol=1e-2, equal_nan=True)


def check_uint8_targets_and_noncontiguous_shards(pg: dist.ProcessGroup) -> None:
    """uint8 class ids, and shards that are strided views into the full logits."""
    x = torch.randn(6, 7, dtype=torch.float64, generator=generator(1))
    target = torch.tensor([0, 6, 3, 2, 5, 1], dtype=torch.uint8)
    expected = F.cross_entropy(x, target.long(), label_smoothing=0.1)
    for widths in LAYOUTS[world()]:
        actual = vocab_parallel_cross_entropy(shard(x, widths, 1), target, label_smoothing=0.1, process_group=pg)
        assert_close(actual, expected, 1e-12, f"uint8 {widths}")
        x_t = x.t().contiguous().t()  # column-major: every shard is non-contiguous
        actual = vocab_parallel_cross_entropy(shard(x_t, widths, 1), target, label_smoothing=0.1, process_group=pg)
        assert_close(actual, expected, 1e-12, f"column-major {widths}")


def check_collectives(pg: dist.ProcessGroup) -> None:
    """Forward: the agreement all-reduce MAX (22 int64 per rank, whatever the input), the row-max
    all-reduce MAX and one all-reduce SUM, both in the accumulation dtype; backward: no collective."""
    calls: list[str] = []
    sizes: list[tuple[int, torch.dtype]] = []
    names = [
        "all_reduce",
        "all_gather",
        "all_gather_into_tensor",
        "broadcast",
        "reduce_scatter_tensor",
        "all_to_all",
        "reduce",
        "gather",
        "scatter",
        "barrier",
    ]
    originals = {name: getattr(dist, name) for name in names}

    def spy(name: str, *args: object, **kwargs: object) -> object:
        op = kwargs.get("op")
        calls.append(f"{name}:{str(op).split('.')[-1]}" if op is not None else name)
        if isinstance(args[0], torch.Tensor):
            sizes.append((args[0].numel(), args[0].dtype))
        return originals[name](*args, **kwargs)

    widths = LAYOUTS[world()][-1]
    for case in case_grid([(3, 7)]):
        x, t, w = case.tensors(torch.float64)
        x_local = shard(x, widths, case.class_dim).clone().requires_grad_()
        t_local = shard(t, widths, 1).clone().requires_grad_() if case.probability else t
        w_local = None if w is None else shard(w, widths, 0)
        try:
            for name in names:
                setattr(dist, name, functools.partial(spy, name))
            calls.clear()
            sizes.clear()
            loss = vocab_parallel_cross_entropy(
                x_local, t_local, w_local, case.ignore_index, case.reduction, case.label_smoothing, process_group=pg
            )
            forward = list(calls)
            calls.clear()
            loss.sum().backward()
            backward = list(calls)
        finally:
            for name, fn in originals.items():
                setattr(dist, name, fn)
        assert forward == ["all_reduce:MAX", "all_reduce:MAX", "all_reduce:SUM"], f"{case}: forward {forward}"
        assert sizes[0] == (22 * world(), torch.int64), f"{case}: agreement table {sizes[0]}"
        assert sizes[1] == (3, torch.float64), f"{case}: row maxima {sizes[1]}"
        assert backward == [], f"{case}: backward collectives {backward}"


def check_input_untouched(pg: dist.ProcessGroup) -> None:
    """float32 logits are never modified in place (Megatron's fp32 path mutates them)."""
    widths = LAYOUTS[world()][0]
    x = torch.randn(5, 7, generator=generator(4))
    x_local = shard(x, widths, 1).clone().requires_grad_()
    before = x_local.detach().clone()
    vocab_parallel_cross_entropy(
        x_local, torch.tensor([0, 1, 2, 3, 6]), label_smoothing=0.1, process_group=pg
    ).backward()
    assert torch.equal(x_local.detach(), before)


def checks() -> list[tuple[str, Check]]:
    return [
        (f.__name__, f)
        for f in (
            check_grid,
            check_float32,
            check_normalizer,
            check_extreme_logits,
            check_all_ignored,
            check_low_precision,
            check_uint8_targets_and_noncontiguous_shards,
            check_collectives,
            check_input_untouched,
        )
    ]
