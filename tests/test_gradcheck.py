"""torch.autograd.gradcheck of every hand-written backward, in float64, including 'none' VJPs."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import crossent

F64 = torch.float64


def _check(fn, *inputs):
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.4])
def test_cross_entropy_class_index(reduction, eps, block_size):
    x = torch.randn(4, 5, 3, dtype=F64, requires_grad=True)
    t = torch.randint(0, 5, (4, 3))
    t[0, 1] = -100
    w = torch.rand(5, dtype=F64) + 0.5
    _check(lambda x: crossent.cross_entropy(x, t, w, reduction=reduction, label_smoothing=eps), x)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_probabilities(reduction, block_size):
    x = torch.randn(4, 5, dtype=F64, requires_grad=True)
    p = torch.rand(4, 5, dtype=F64, requires_grad=True)
    w = torch.rand(5, dtype=F64, requires_grad=True)
    _check(lambda x, p, w: crossent.cross_entropy(x, p, w, reduction=reduction, label_smoothing=0.1), x, p, w)


def test_nll_loss():
    z = torch.randn(6, 4, dtype=F64, requires_grad=True)
    t = torch.tensor([0, 3, -100, 1, 1, 2])
    w = torch.rand(4, dtype=F64)
    _check(lambda z: crossent.nll_loss(z, t, w, reduction="none"), z)


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_softmax_family(op, block_size):
    x = torch.randn(3, 4, 5, dtype=F64, requires_grad=True)
    _check(lambda x: getattr(crossent, op)(x, dim=1), x)


def test_binary_losses():
    x = torch.rand(3, 4, dtype=F64).clamp(0.05, 0.95).requires_grad_()
    y = torch.rand(3, 4, dtype=F64, requires_grad=True)
    w = torch.rand(4, dtype=F64)
    _check(lambda x, y: crossent.binary_cross_entropy(x, y, w, reduction="none"), x, y)
    logits = torch.randn(3, 4, dtype=F64, requires_grad=True)
    pw = torch.rand(4, dtype=F64) * 3
    _check(lambda x, y: crossent.binary_cross_entropy_with_logits(x, y, pos_weight=pw), logits, y)


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(log_target):
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    t = torch.rand(4, dtype=F64).add(0.1).requires_grad_()
    _check(lambda x, t: crossent.kl_div(x, t, reduction="batchmean", log_target=log_target), x, t)
