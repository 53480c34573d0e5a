"""process_group= and normalizer= on the public crossent.cross_entropy and crossent.linear_cross_entropy.

The multi-rank checks of these keywords run inside ``test_vocab_parallel``'s spawns as soon as the
keywords exist (``dist_checks_public_api``); the tests here cover the single-process normalizer and
make the missing wiring visible as a skip.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent.distributed import count_targets


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("probability", [False, True])
def test_cross_entropy_normalizer(reduction: str, probability: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = (
        torch.randn(6, 5, dtype=torch.float64, generator=g).softmax(1)
        if probability
        else torch.tensor([0, 4, -100, 2, 2, 1])
    )
    for normalizer in (3, 2.5, torch.tensor(7), count_targets(torch.tensor([0, 1, -100]))):
        actual = crossent.cross_entropy(x, y, reduction=reduction, label_smoothing=0.1, normalizer=normalizer)
        expected = F.cross_entropy(x, y, reduction="sum", label_smoothing=0.1) / float(normalizer)
        torch.testing.assert_close(actual, expected, rtol=1e-14, atol=0)
        (g_actual,) = torch.autograd.grad(actual, x)
        (g_expected,) = torch.autograd.grad(expected, x)
        torch.testing.assert_close(g_actual, g_expected, rtol=1e-14, atol=1e-18)


def test_cross_entropy_normalizer_refuses_none() -> None:
    with pytest.raises(ValueError, match="not 'none'"):
        crossent.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="none", normalizer=2)


def test_cross_entropy_process_group_needs_torch_distributed() -> None:
    with pytest.raises((RuntimeError, TypeError), match="init_process_group|ProcessGroup"):
        crossent.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), process_group=object())


@pytest.mark.parametrize("normalizer", [torch.tensor(9), 9.0], ids=["tensor", "float"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none-per-row-backward"])
def test_linear_cross_entropy_normalizer(reduction: str, normalizer: object) -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 4, -100, 2, 2, 1])
    if reduction == "none-per-row-backward":  # a retained graph's second backward recomputes
        loss = crossent.linear_cross_entropy(h, w, y, normalizer=normalizer)
        first = torch.autograd.grad(loss, (h, w), retain_graph=True)
        for a, e in zip(torch.autograd.grad(loss, (h, w)), first, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-14, atol=1e-18)
        return
    actual = crossent.linear_cross_entropy(h, w, y, reduction=reduction, normalizer=normalizer)
    expected = F.cross_entropy(h @ w.T, y, reduction="sum") / 9
    torch.testing.assert_close(actual, expected, rtol=1e-14, atol=0)
    grads = torch.autograd.grad(actual, (h, w))
    expected_grads = torch.autograd.grad(expected, (h, w))
    for a, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-14, atol=1e-18)
