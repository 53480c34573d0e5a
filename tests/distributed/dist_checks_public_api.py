"""Multi-rank checks through the public keywords: crossent.cross_entropy(..., process_group=, normalizer=)
and crossent.linear_cross_entropy(..., process_group=, normalizer=)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_cases import (
    LAYOUTS,
    assert_close,
    case_grid,
    generator,
    shard,
    world,
)
from dist_checks_cross_entropy import compare
from dist_checks_normalization import accumulate, full_batch_reference
from dist_harness import Check

import crossent


def check_cross_entropy_process_group(pg: dist.ProcessGroup) -> None:
    """crossent.cross_entropy(..., process_group=pg) is the vocab-parallel loss, normalizer included."""
    layouts = LAYOUTS[world()]
    for i, case in enumerate(case_grid([(4, 7), (2, 7, 2)])):
        normalizer = None if case.reduction == "none" else (None, 5, torch.tensor(3.5, dtype=torch.float64))[i % 3]
        compare(case, layouts[i % len(layouts)], pg, torch.float64, normalizer, loss_fn=crossent.cross_entropy)


def check_normalizer_keyword_accumulation(pg: dist.ProcessGroup) -> None:
    """The gradient-accumulation recipe with the public keyword, data parallel over the ranks."""

    def loss_of(logits: torch.Tensor, y: torch.Tensor, count: torch.Tensor, **options: object) -> torch.Tensor:
        return crossent.cross_entropy(logits, y, normalizer=count, **options)  # type: ignore[arg-type]

    for options in ({}, {"label_smoothing": 0.2}):
        expected_loss, expected_grad = full_batch_reference(**options)
        loss, grad = accumulate(loss_of, **options)
        assert_close(loss, expected_loss, 1e-12, f"keyword recipe loss {options}")
        assert_close(grad, expected_grad, 1e-12, f"keyword recipe grad {options}")


def check_linear_cross_entropy_process_group(pg: dist.ProcessGroup) -> None:
    """crossent.linear_cross_entropy(..., process_group=pg) is the vocab-parallel linear loss."""
    g = generator(21)
    h = torch.randn(6, 5, dtype=torch.float64, generator=g)
    classifier = torch.randn(7, 5, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 6, 3, -100, 2, 5])
    for widths in LAYOUTS[world()]:
        for normalizer in (None, torch.tensor(4)):
            h_full, w_full = h.clone().requires_grad_(), classifier.clone().requires_grad_()
            expected = F.cross_entropy(h_full @ w_full.T, y, label_smoothing=0.1, reduction="sum")
            expected = expected / 4 if normalizer is not None else expected
            expected.backward()
            h_local = h.clone().requires_grad_()
            w_local = shard(classifier, widths, 0).clone().requires_grad_()
            actual = crossent.linear_cross_entropy(
                h_local, w_local, y, reduction="sum", label_smoothing=0.1, process_group=pg, normalizer=normalizer
            )
            actual.backward()
            assert_close(actual, expected, 1e-12, f"public linear loss {widths}")
            assert_close(h_local.grad, h_full.grad, 1e-12, f"public linear input grad {widths}")
            assert_close(w_local.grad, shard(w_full.grad, widths, 0), 1e-12, f"public linear weight grad {widths}")


def checks() -> list[tuple[str, Check]]:
    selected = [
        check_cross_entropy_process_group,
        check_normalizer_keyword_accumulation,
        check_linear_cross_entropy_process_group,
    ]
    return [(f.__name__, f) for f in selected]
