"""Triton binary_cross_entropy(_with_logits) and kl_div against torch.nn.functional."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.crossent_triton.triton_env import triton_device
from tests.helpers import check_against

DEVICE = triton_device()
ct = pytest.importorskip("crossent.triton")
f64 = torch.float64
SHAPE = (3, 4, 5)


def rand(*shape: int, dtype: torch.dtype = f64) -> torch.Tensor:
    return torch.rand(*shape, dtype=dtype, device=DEVICE)


# Weight layouts: none, trailing (C,), channel (4, 1), full shape, and (3, 1, 5) which is not one
# contiguous run of dims (copied); pos_weight likewise.
EXTRAS = {
    "plain": (None, None),
    "trailing": ((5,), (5,)),
    "channel": ((4, 1), (4, 1)),
    "full": (SHAPE, None),
    "gapped": ((3, 1, 5), (1,)),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("extras", list(EXTRAS))
def test_bce_with_logits(layout: str, reduction: str, extras: str) -> None:
    w_shape, pw_shape = EXTRAS[extras]
    w = rand(*w_shape) if w_shape else None
    pw = rand(*pw_shape) * 3 if pw_shape else None
    x = torch.randn(SHAPE, dtype=f64, device=DEVICE) * 3
    check_against(
        lambda x, t: ct.binary_cross_entropy_with_logits(x, t, w, reduction, pw),
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw),
        (x, rand(*SHAPE)),
        grad_args=(0, 1),
    )


def test_bce_with_logits_extremes_and_dtypes() -> None:
    inf = math.inf
    x = torch.tensor([100.0, -100.0, 0.0, inf, -inf, inf, 30.0, -30.0, 1e-9], dtype=f64, device=DEVICE)
    t = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.0, 2.0], dtype=f64, device=DEVICE)
    check_against(
        lambda x, t: ct.binary_cross_entropy_with_logits(x, t, None, "none", None),
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
        (x, t),
        grad_args=(0, 1),
    )
    # The result takes the target's dtype.
    out = ct.binary_cross_entropy_with_logits(x.float(), t, None, "mean", None)
    assert out.dtype == f64


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_on_probabilities(reduction: str, weighted: bool) -> None:
    w = rand(5) if weighted else None
    p = rand(*SHAPE).clamp(1e-3, 1 - 1e-3)
    p.view(-1)[:4] = torch.tensor([0.0, 1.0, 1e-40, 1 - 1e-16], dtype=f64)  # clamped logs and large grads
    t = rand(*SHAPE)
    t.view(-1)[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=f64)
    check_against(
        lambda p, t: ct.binary_cross_entropy(p, t, w, reduction),
        lambda p, t: F.binary_cross_entropy(p, t, w, reduction=reduction),
        (p, t),
        grad_args=(0, 1),
        rtol=1e-9,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(layout: str, reduction: str, log_target: bool) -> None:
    x = torch.randn(3, 7, dtype=f64, device=DEVICE).log_softmax(1)
    t = rand(3, 7).softmax(1)
    t[0, :2] = 0.0  # xlogy(0, 0) = 0
    if log_target:
        t = t.log()
    oracle_reduction = "sum" if reduction == "mean" else reduction  # avoid torch's warning
    scale = 1 / x.numel() if reduction == "mean" else 1.0
    check_against(
        lambda x, t: ct.kl_div(x, t, reduction, log_target),
        lambda x, t: F.kl_div(x, t, reduction=oracle_reduction, log_target=log_target) * scale,
        (x, t),
        grad_args=(0, 1),
    )


def test_kl_div_broadcasts_and_promotes() -> None:
    x = torch.randn(4, 6, dtype=torch.float32, device=DEVICE).log_softmax(1)
    t = rand(6).softmax(0)
    for reduction in ("batchmean", "none"):
        check_against(
            lambda x, t, r=reduction: ct.kl_div(x, t, r, False),
            lambda x, t, r=reduction: F.kl_div(x, t, reduction=r),
            (x, t),
            grad_args=(0, 1),
            atol=1e-6,
            rtol=1e-5,
        )


def test_empty_element_wise_inputs() -> None:
    e = torch.zeros(0, 3, dtype=f64, device=DEVICE)
    for reduction in ("mean", "sum", "none"):
        check_against(
            lambda x, t, r=reduction: ct.binary_cross_entropy_with_logits(x, t, None, r, None),
            lambda x, t, r=reduction: F.binary_cross_entropy_with_logits(x, t, reduction=r),
            (e, e),
        )
    check_against(
        lambda x, t: ct.kl_div(x, t, "batchmean", False),
        lambda x, t: F.kl_div(x, t, reduction="batchmean"),
        (e, e),
    )
