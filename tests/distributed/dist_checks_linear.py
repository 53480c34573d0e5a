"""Multi-rank checks of vocab_parallel_linear_cross_entropy against torch on the whole classifier."""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_cases import LAYOUTS, Case, assert_close, assert_same_on_every_rank, case_grid, generator, shard, world
from dist_harness import Check

from crossent.distributed import vocab_parallel_linear_cross_entropy

HIDDEN = 5


def compare(case: Case, widths: list[int], pg: dist.ProcessGroup, chunk_size: int | None, bias: bool) -> None:
    """Loss, input gradient (reduced), and every sharded gradient equal torch's on the full classifier."""
    _, t, w = case.tensors(torch.float64)
    g = generator(case.seed + 1000)
    batch = case.shape[:1] + case.shape[2:] if len(case.shape) > 1 else ()
    h = torch.randn(*batch, HIDDEN, dtype=torch.float64, generator=g)
    classifier = torch.randn(case.classes, HIDDEN, dtype=torch.float64, generator=g)
    b = torch.randn(case.classes, dtype=torch.float64, generator=g) if bias else None
    if case.probability:  # class dim last, like the logits of a linear layer
        t = t.movedim(case.class_dim, -1).contiguous() if len(case.shape) > 1 else t

    h_full, w_full = h.clone().requires_grad_(), classifier.clone().requires_grad_()
    b_full = b.clone().requires_grad_() if b is not None else None
    t_full = t.clone().requires_grad_() if case.probability else t
    cw_full = w.clone().requires_grad_() if (w is not None and case.probability) else w
    logits = h_full @ w_full.T + (b_full if b_full is not None else 0)
    logits = logits.movedim(-1, 1) if logits.dim() > 2 else logits
    t_ref = t_full.movedim(-1, 1) if case.probability and t_full.dim() > 2 else t_full
    ignore = case.ignore_index
    expected = F.cross_entropy(
        logits, t_ref, cw_full, ignore_index=ignore, reduction=case.reduction, label_smoothing=case.label_smoothing
    )

    h_local = h.clone().requires_grad_()
    w_local = shard(classifier, widths, 0).clone().requires_grad_()
    b_local = shard(b, widths, 0).clone().requires_grad_() if b is not None else None
    t_local = shard(t, widths, t.dim() - 1).clone().requires_grad_() if case.probability else t
    cw_local = None if w is None else shard(w, widths, 0).clone().requires_grad_(case.probability)
    actual = vocab_parallel_linear_cross_entropy(
        h_local,
        w_local,
        t_local,
        linear_bias=b_local,
        weight=cw_local,
        reduction=case.reduction,
        ignore_index=None if case.probability else ignore,
        label_smoothing=case.label_smoothing,
        process_group=pg,
        chunk_size=chunk_size,
    )
    what = f"linear {case} widths={widths} chunk={chunk_size} bias={bias}"
    assert_close(actual, expected, 1e-12, f"loss {what}")
    assert_same_on_every_rank(actual.detach(), f"loss {what}")
    up = torch.randn(expected.shape, dtype=torch.float64, generator=generator(case.seed))
    (expected * up).sum().backward()
    (actual * up).sum().backward()
    assert_close(h_local.grad, h_full.grad, 1e-12, f"input grad {what}")
    assert_close(w_local.grad, shard(w_full.grad, widths, 0), 1e-12, f"linear_weight grad {what}")
    if b_local is not None:
        assert_close(b_local.grad, shard(b_full.grad, widths, 0), 1e-12, f"bias grad {what}")
    if case.probability:
        assert_close(t_local.grad, shard(t_full.grad, widths, t.dim() - 1), 1e-12, f"target grad {what}")
        if cw_local is not None:
            assert_close(cw_local.grad, shard(cw_full.grad, widths, 0), 1e-12, f"class weight grad {what}")


def check_linear_grid(pg: dist.ProcessGroup) -> None:
    """float64, 1e-12: target kinds, weights, smoothing, reductions; chunked and whole; with and without bias."""
    layouts = LAYOUTS[world()]
    for i, case in enumerate(case_grid([(6, 7), (2, 7, 3), (7,), (0, 7)])):
        layout = layouts[(i + i // 3) % len(layouts)]
        compare(case, layout, pg, chunk_size=4 if i % 2 else None, bias=i % 4 < 2)


def check_input_grad_left_to_the_caller(pg: dist.ProcessGroup) -> None:
    """reduce_input_grad=False: each rank returns its share; their sum is the gradient."""
    g = generator(11)
    h = torch.randn(6, HIDDEN, dtype=torch.float64, generator=g)
    classifier = torch.randn(7, HIDDEN, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 6, 3, -100, 2, 5])
    h_full = h.clone().requires_grad_()
    F.cross_entropy(h_full @ classifier.T, y, label_smoothing=0.1).backward()
    for widths in LAYOUTS[world()]:
        h_local = h.clone().requires_grad_()
        loss = vocab_parallel_linear_cross_entropy(
            h_local,
            shard(classifier, widths, 0),
            y,
            label_smoothing=0.1,
            process_group=pg,
            reduce_input_grad=False,
        )
        loss.backward()
        share = h_local.grad.clone()
        dist.all_reduce(share, group=pg)
        assert_close(share, h_full.grad, 1e-12, f"summed input-grad shares {widths}")


def check_linear_float32(pg: dist.ProcessGroup) -> None:
    """float32, 1e-6 relative: 32 rows, 300 classes split unevenly."""
    widths = {1: [300], 2: [170, 130], 3: [100, 1, 199]}[world()]
    g = generator(12)
    h = torch.randn(32, 16, generator=g)
    classifier = torch.randn(300, 16, generator=g) * 0.5
    y = torch.randint(0, 300, (32,), generator=g)
    y[::5] = -100
    for eps in (0.0, 0.2):
        h_full, w_full = h.clone().requires_grad_(), classifier.clone().requires_grad_()
        expected = F.cross_entropy(h_full @ w_full.T, y, label_smoothing=eps)
        expected.backward()
        h_local = h.clone().requires_grad_()
        w_local = shard(classifier, widths, 0).clone().requires_grad_()
        actual = vocab_parallel_linear_cross_entropy(
            h_local, w_local, y, label_smoothing=eps, process_group=pg, chunk_size=7
        )
        actual.backward()
        assert_close(actual, expected, 1e-6, f"float32 loss eps={eps}")
        assert_close(h_local.grad, h_full.grad, 1e-6, f"float32 input grad eps={eps}")
        assert_close(w_local.grad, shard(w_full.grad, widths, 0), 1e-6, f"float32 weight grad eps={eps}")


def check_linear_collectives(pg: dist.ProcessGroup) -> None:
    """Forward: the agreement MAX, the row-max MAX, then SUM. Backward: one SUM of the input gradient
    (and one flag per rank), or none when the caller reduces it."""
    calls: list[str] = []
    original = dist.all_reduce

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(f"all_reduce:{kwargs.get('op')}")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    widths = LAYOUTS[world()][0]
    h = torch.randn(4, HIDDEN, dtype=torch.float64, generator=generator(13))
    classifier = shard(torch.randn(7, HIDDEN, dtype=torch.float64, generator=generator(14)), widths, 0)
    y = torch.tensor([1, 2, 3, 4])
    for reduce_input_grad, input_grad, expected_backward in ((True, True, 1), (False, True, 0), (True, False, 0)):
        h_local = h.clone().requires_grad_(input_grad)
        w_local = classifier.clone().requires_grad_()
        loss_fn = functools.partial(
            vocab_parallel_linear_cross_entropy, process_group=pg, reduce_input_grad=reduce_input_grad
        )
        try:
            dist.all_reduce = spy  # type: ignore[assignment]
            calls.clear()
            loss = loss_fn(h_local, w_local, y)
            forward = [c.split(".")[-1] for c in calls]
            calls.clear()
            loss.backward()
            backward = [c.split(".")[-1] for c in calls]
        finally:
            dist.all_reduce = original
        assert forward == ["MAX", "MAX", "SUM"], forward
        assert backward == ["SUM"] * expected_backward, (reduce_input_grad, input_grad, backward)


def checks() -> list[tuple[str, Check]]:
    return [
        (f.__name__, f)
        for f in (
            check_linear_grid,
            check_input_grad_left_to_the_caller,
            check_linear_float32,
            check_linear_collectives,
        )
    ]
