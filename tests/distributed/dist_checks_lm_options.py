"""Multi-rank checks of the language-model options: softcap, temperature, z-loss, the statistics and the shift."""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from dist_cases import LAYOUTS, assert_close, assert_same_on_every_rank, case_grid, generator, shard, tiny_blocks, world
from dist_harness import Check

import crossent
from crossent.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
from lm_reference import reference

OPTIONS = {"softcap": 2.5, "temperature": 0.8, "z_loss": 0.1}


def check_options_grid(pg: dist.ProcessGroup) -> None:
    """Loss, lse, entropy, z-loss and accuracy on every rank, and the gradient of each rank's shard."""
    layouts = LAYOUTS[world()]
    for i, case in enumerate(case_grid([(5, 7), (2, 7, 3)])):
        widths = layouts[i % len(layouts)]
        x, t, w = case.tensors(torch.float64)
        x_full = x.clone().requires_grad_()
        extra = {"ignore_index": case.ignore_index, "reduction": case.reduction}
        extra["label_smoothing"] = case.label_smoothing
        ref = reference(x_full, t, w, **extra, **OPTIONS)  # type: ignore[arg-type]
        x_local = shard(x, widths, 1).clone().requires_grad_()
        t_local = shard(t, widths, 1) if case.probability else t
        w_local = None if w is None else shard(w, widths, 0)
        with tiny_blocks(i % 2 == 1):
            loss, stats = vocab_parallel_cross_entropy(
                x_local, t_local, w_local, **extra, process_group=pg, return_stats=True, **OPTIONS
            )
        what = f"{case} widths={widths}"
        assert_close(loss, ref.loss, 1e-12, f"loss {what}")
        assert_same_on_every_rank(loss.detach(), f"loss {what}")
        for name in ("lse", "entropy", "z_loss"):
            assert_close(getattr(stats, name), getattr(ref, name), 1e-12, f"{name} {what}")
        if case.probability:
            assert stats.accuracy is None
        else:
            assert_close(stats.accuracy, ref.accuracy, 0.0, f"accuracy {what}")
        g = generator(case.seed)
        upstream = [torch.randn(r.shape, dtype=torch.float64, generator=g) for r in ref[:3]]
        sum((u * r).sum() for u, r in zip(upstream, ref[:3], strict=True)).backward()
        mine = (loss, stats.lse, stats.entropy)
        sum((u * r).sum() for u, r in zip(upstream, mine, strict=True)).backward()
        assert_close(x_local.grad, shard(x_full.grad, widths, 1), 1e-12, f"input grad {what}")


def check_accuracy_across_shards(pg: dist.ProcessGroup) -> None:
    """The global first argmax: a maximum tied across shards goes to the lower class id."""
    x = torch.tensor([[5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 9.0]])
    for widths in LAYOUTS[world()]:
        for target, expected in ((torch.tensor([0, 6]), 1.0), (torch.tensor([6, 6]), 0.5)):
            _, stats = vocab_parallel_cross_entropy(shard(x, widths, 1), target, process_group=pg, return_stats=True)
            assert stats.accuracy.item() == expected, (widths, target, stats.accuracy)


def check_options_collectives(pg: dist.ProcessGroup) -> None:
    """The options add no collective; the statistics add one all-reduce MIN (the accuracy's argmax)."""
    calls: list[str] = []
    original = dist.all_reduce

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(str(kwargs.get("op")).split(".")[-1])
        return original(*args, **kwargs)  # type: ignore[arg-type]

    widths = LAYOUTS[world()][0]
    x = torch.randn(4, 7, dtype=torch.float64, generator=generator(3))
    y = torch.tensor([0, 3, 6, -100])
    loss_fn = functools.partial(vocab_parallel_cross_entropy, shard(x, widths, 1), y, process_group=pg, **OPTIONS)
    try:
        dist.all_reduce = spy  # type: ignore[assignment]
        loss_fn()
        plain = list(calls)
        calls.clear()
        loss_fn(return_stats=True)
        with_stats = list(calls)
    finally:
        dist.all_reduce = original
    assert plain == ["MAX", "MAX", "SUM"], plain
    assert with_stats == ["MAX", "MAX", "SUM", "MIN"], with_stats


def check_linear_options_and_shift(pg: dist.ProcessGroup) -> None:
    """The linear loss with every option, its statistics and a causal shift, against the full classifier."""
    g = generator(21)
    h = torch.randn(2, 5, 4, dtype=torch.float64, generator=g)
    classifier = torch.randn(7, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, 7, (2, 5), generator=g)
    y[0, 2] = -100
    for widths in LAYOUTS[world()]:
        for reduction in ("mean", "none"):
            h_full, w_full = h.clone().requires_grad_(), classifier.clone().requires_grad_()
            logits = (h_full @ w_full.T)[:, :-1].transpose(1, 2)
            ref = reference(logits, y[:, 1:], reduction=reduction, **OPTIONS)  # type: ignore[arg-type]
            h_local, w_local = h.clone().requires_grad_(), shard(classifier, widths, 0).clone().requires_grad_()
            loss, stats = vocab_parallel_linear_cross_entropy(
                h_local, w_local, y, reduction=reduction, process_group=pg, shift=1, return_stats=True, **OPTIONS
            )
            what = f"linear shift widths={widths} {reduction}"
            pad = functools.partial(torch.nn.functional.pad, pad=(0, 1))
            assert_close(loss, pad(ref.loss) if reduction == "none" else ref.loss, 1e-12, f"loss {what}")
            assert_close(stats.entropy, pad(ref.entropy), 1e-12, f"entropy {what}")
            assert_close(stats.accuracy, ref.accuracy, 0.0, f"accuracy {what}")
            (ref.loss.sum() + ref.entropy.sum()).backward()
            (loss.sum() + stats.entropy.sum()).backward()
            assert_close(h_local.grad, h_full.grad, 1e-12, f"input grad {what}")
            assert_close(w_local.grad, shard(w_full.grad, widths, 0), 1e-12, f"weight grad {what}")


def check_linear_focal(pg: dist.ProcessGroup) -> None:
    """The fused focal loss over vocab shards: p_t from the global statistics."""
    g = generator(22)
    h = torch.randn(6, 4, dtype=torch.float64, generator=g)
    classifier = torch.randn(7, 4, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 6, -100, 3, 3, 1])
    for widths in LAYOUTS[world()]:
        h_full, w_full = h.clone().requires_grad_(), classifier.clone().requires_grad_()
        expected = crossent.focal_loss(h_full @ w_full.T, y, gamma=2.0)
        h_local, w_local = h.clone().requires_grad_(), shard(classifier, widths, 0).clone().requires_grad_()
        loss = vocab_parallel_linear_cross_entropy(h_local, w_local, y, process_group=pg, focal_gamma=2.0)
        assert_close(loss, expected, 1e-12, f"focal widths={widths}")
        expected.backward()
        loss.backward()
        assert_close(h_local.grad, h_full.grad, 1e-12, f"focal input grad widths={widths}")
        assert_close(w_local.grad, shard(w_full.grad, widths, 0), 1e-12, f"focal weight grad widths={widths}")


def checks() -> list[tuple[str, Check]]:
    return [
        (f.__name__, f)
        for f in (
            check_options_grid,
            check_accuracy_across_shards,
            check_options_collectives,
            check_linear_options_and_shift,
            check_linear_focal,
        )
    ]
