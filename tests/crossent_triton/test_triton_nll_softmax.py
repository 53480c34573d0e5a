"""Triton nll_loss, log_softmax and softmax against torch.nn.functional, values and gradients."""

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


def log_probs(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=f64, device=DEVICE).log_softmax(1 if len(shape) > 1 else 0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(reduction: str, weighted: bool) -> None:
    z = log_probs(2, 9, 3)  # K-dim, 6 positions, one ignored
    t = torch.tensor([[8, 0, -100], [4, 4, 1]], device=DEVICE)
    w = torch.rand(9, dtype=f64, device=DEVICE) if weighted else None
    check_against(
        lambda z, t, w: ct.nll_loss(z, t, w, -100, reduction),
        lambda z, t, w: F.nll_loss(z, t, w, reduction=reduction),
        (z, t, w),
    )


@pytest.mark.parametrize(
    "case",
    ["every target ignored", "zero total weight", "unbatched", "empty batch", "ignore index in range"],
)
def test_nll_loss_edge_cases(case: str) -> None:
    z, w, ii = log_probs(3, 4), None, -100
    t = torch.tensor([0, 3, 1], device=DEVICE)
    if case == "every target ignored":
        t = torch.full((3,), -100, device=DEVICE)
    elif case == "zero total weight":
        w = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=f64, device=DEVICE)
        t = torch.tensor([0, 3, -100], device=DEVICE)
    elif case == "unbatched":
        z, t = log_probs(5), torch.tensor(2, device=DEVICE)
    elif case == "empty batch":
        z, t = log_probs(0, 4), torch.zeros(0, dtype=torch.long, device=DEVICE)
    else:
        ii = 3
    for reduction in ("mean", "sum", "none"):
        check_against(
            lambda z, t, w, r=reduction: ct.nll_loss(z, t, w, ii, r),
            lambda z, t, w, r=reduction: F.nll_loss(z, t, w, ignore_index=ii, reduction=r),
            (z, t, w),
        )


@pytest.mark.parametrize("log", [True, False])
@pytest.mark.parametrize("shape, dim", [((3, 13), 1), ((2, 5, 3), 1), ((2, 3, 4), 0), ((4, 3), -1)])
def test_softmax(layout: str, log: bool, shape: tuple[int, ...], dim: int) -> None:
    ours, theirs = (ct.log_softmax, F.log_softmax) if log else (ct.softmax, F.softmax)
    x = torch.randn(shape, dtype=f64, device=DEVICE)
    check_against(lambda x: ours(x, dim), lambda x: theirs(x, dim), (x,))


@pytest.mark.parametrize("log", [True, False])
def test_softmax_non_finite_and_degenerate_inputs(log: bool) -> None:
    inf, nan = math.inf, math.nan
    ours, theirs = (ct.log_softmax, F.log_softmax) if log else (ct.softmax, F.softmax)
    x = torch.tensor(
        [[0.0, -inf, 1.0], [-inf, -inf, -inf], [0.0, inf, 1.0], [nan, 0.0, 1.0], [1000.0, 0.0, -1000.0]],
        dtype=f64,
        device=DEVICE,
    )
    check_against(lambda x: ours(x, 1), lambda x: theirs(x, 1), (x,))
    for degenerate in (torch.tensor(3.0, dtype=f64, device=DEVICE), torch.zeros(0, 4, dtype=f64, device=DEVICE)):
        check_against(lambda x: ours(x, -1), lambda x: theirs(x, -1), (degenerate,))


def test_log_softmax_of_a_non_contiguous_input() -> None:
    x = torch.randn(6, 4, dtype=f64, device=DEVICE).t()
    check_against(lambda x: ct.log_softmax(x, 1), lambda x: F.log_softmax(x, 1), (x,))
