"""Multi-rank checks of the gradient-accumulation recipe: sum every loss, divide by the global count."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_cases import LAYOUTS, assert_close, generator, rank, shard, world
from dist_harness import Check

import crossent
from crossent.distributed import count_targets, normalized_sum, vocab_parallel_cross_entropy

CLASSES, HIDDEN = 7, 4  # 7 classes: the shard layouts of dist_cases
MICRO_BATCH_SIZES = [3, 5]  # uneven micro-batches, so mean-of-means is visibly wrong


def micro_batches(owner: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``owner``'s (hidden, target) micro-batches, with a different share of ignored targets each."""
    batches = []
    for i, size in enumerate(MICRO_BATCH_SIZES):
        g = generator(100 * owner + i)
        h = torch.randn(size, HIDDEN, dtype=torch.float64, generator=g)
        y = torch.randint(0, CLASSES, (size,), generator=g)
        y[: (owner + i) % size] = -100
        batches.append((h, y))
    return batches


def model() -> torch.Tensor:
    return torch.randn(CLASSES, HIDDEN, dtype=torch.float64, generator=generator(99)).requires_grad_()


def full_batch_reference(**options: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and gradient of one big batch holding every rank's every micro-batch."""
    w = model()
    batches = [b for owner in range(world()) for b in micro_batches(owner)]
    h = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    loss = F.cross_entropy(h @ w.T, y, **options)  # type: ignore[arg-type]
    loss.backward()
    return loss.detach(), w.grad  # type: ignore[return-value]


def accumulate(loss_of: object, normalizer_scale: float = 1.0, **options: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rank: count once, then one backward per micro-batch; then sum loss and gradient over ranks."""
    w = model()
    mine = micro_batches(rank())
    class_weight = options.get("weight")
    count = count_targets(torch.cat([y for _, y in mine]), weight=class_weight, process_group=dist.group.WORLD)
    total = torch.zeros((), dtype=torch.float64)
    for h, y in mine:
        loss = loss_of(h @ w.T, y, count * normalizer_scale, **options)  # type: ignore[operator]
        loss.backward()
        total += loss.detach()
    dist.all_reduce(total)
    dist.all_reduce(w.grad)
    return total, w.grad  # type: ignore[return-value]


def summed(logits: torch.Tensor, y: torch.Tensor, normalizer: torch.Tensor, **options: object) -> torch.Tensor:
    return normalized_sum(crossent.cross_entropy(logits, y, reduction="none", **options), normalizer)  # type: ignore[arg-type]


def check_count_targets(pg: dist.ProcessGroup) -> None:
    """The global count is the number (or class weight) of kept targets over every rank."""
    everything = torch.cat([y for owner in range(world()) for _, y in micro_batches(owner)])
    mine = torch.cat([y for _, y in micro_batches(rank())])
    count = count_targets(mine, process_group=pg)
    assert count.dtype == torch.int64 and int(count) == int((everything != -100).sum()), count
    w = torch.rand(CLASSES, dtype=torch.float64, generator=generator(5))
    weighted = count_targets(mine, weight=w, process_group=pg)
    kept = everything[everything != -100]
    assert_close(weighted, w[kept].sum(), 1e-14, "weighted count")


def check_gradient_accumulation_equals_full_batch(pg: dist.ProcessGroup) -> None:
    """Summing every micro-batch's loss / global count over ranks is the full-batch mean, value and gradient."""
    for options in ({}, {"label_smoothing": 0.2}, {"weight": torch.rand(CLASSES, dtype=torch.float64) + 0.5}):
        if "weight" in options:
            options["weight"] = torch.linspace(0.5, 2.0, CLASSES, dtype=torch.float64)
        expected_loss, expected_grad = full_batch_reference(**options)
        loss, grad = accumulate(summed, **options)
        assert_close(loss, expected_loss, 1e-12, f"accumulated loss {options}")
        assert_close(grad, expected_grad, 1e-12, f"accumulated grad {options}")


def check_ddp_averaging(pg: dist.ProcessGroup) -> None:
    """Under DDP, which averages gradients over ranks, the normalizer is count / world_size."""
    expected_loss, expected_grad = full_batch_reference()
    loss, grad = accumulate(summed, normalizer_scale=1 / world())
    assert_close(loss / world(), expected_loss, 1e-12, "ddp loss")
    assert_close(grad / world(), expected_grad, 1e-12, "ddp grad")


def check_mean_of_means_is_wrong(pg: dist.ProcessGroup) -> None:
    """The 2024 gradient-accumulation bug, for contrast: averaging per-micro-batch means is not the mean."""
    expected_loss, _ = full_batch_reference()
    w = model()
    means = [F.cross_entropy(h @ w.T, y) for _, (h, y) in enumerate(micro_batches(rank()))]
    total = torch.stack(means).mean().detach()
    dist.all_reduce(total)
    assert abs(float(total / world() - expected_loss)) > 1e-3, (total / world(), expected_loss)


def check_vocab_parallel_accumulation(pg: dist.ProcessGroup) -> None:
    """Vocab-parallel ranks share the micro-batches; the normalizer is counted locally (no data parallelism)."""
    batches = micro_batches(0)
    w_full = model()
    h = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    for eps in (0.0, 0.3):
        expected = F.cross_entropy(h @ w_full.T, y, label_smoothing=eps)
        (expected_grad,) = torch.autograd.grad(expected, w_full)
        for widths in LAYOUTS[world()]:
            w_local = shard(w_full.detach(), widths, 0).clone().requires_grad_()
            count = count_targets(y)
            total = torch.zeros((), dtype=torch.float64)
            for hb, yb in batches:
                loss = vocab_parallel_cross_entropy(
                    hb @ w_local.T, yb, label_smoothing=eps, process_group=pg, normalizer=count
                )
                loss.backward()
                total += loss.detach()
            assert_close(total, expected.detach(), 1e-12, f"vocab-parallel accumulated loss {widths} eps={eps}")
            assert_close(w_local.grad, shard(expected_grad, widths, 0), 1e-12, f"vocab-parallel grad {widths}")


def checks() -> list[tuple[str, Check]]:
    return [
        (f.__name__, f)
        for f in (
            check_count_targets,
            check_gradient_accumulation_equals_full_batch,
            check_ddp_averaging,
            check_mean_of_means_is_wrong,
            check_vocab_parallel_accumulation,
        )
    ]
