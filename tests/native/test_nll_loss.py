"""nll_loss with the native kernels (their zero fill under the backward's scatter) against float64."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent.native import kernels
from tests.helpers import check_against
from tests.native.native_env import in_float64, needs_native

pytestmark = needs_native

native_nll = functools.partial(crossent.nll_loss, impl="native")
torch_nll64 = in_float64(F.nll_loss)

SHAPES = [((5,), ()), ((0, 4), (0,)), ((1, 1), (1,)), ((7, 3), (7,)), ((67, 17), (67,)), ((6, 5, 1), (6, 1))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("pattern", ["none", "some", "all"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_matches_float64(reduction, pattern, weighted, dtype):
    for shape, target_shape in SHAPES:
        c = shape[0] if len(shape) == 1 else shape[1]
        z = torch.randn(shape).log_softmax(0 if len(shape) == 1 else 1).to(dtype)
        t = torch.randint(0, c, target_shape)
        if pattern != "none":
            t.view(-1)[:: 1 if pattern == "all" else 2] = -100
        w = (torch.rand(c) + 0.5).to(dtype) if weighted else None
        tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
        check_against(native_nll, torch_nll64, (z, t), dict(weight=w, reduction=reduction), **tol)


def test_a_large_gradient_is_zero_but_for_the_targets(monkeypatch):
    calls = []
    backward = kernels.nll_loss_rows_backward.eager
    monkeypatch.setattr(kernels.nll_loss_rows_backward, "eager", lambda *a: calls.append(a[0].shape) or backward(*a))
    z = torch.randn(300, 1001).log_softmax(1)  # rows split between threads
    t = torch.randint(0, 1001, (300,))
    t[::5] = -100
    check_against(native_nll, torch_nll64, (z, t), dict(reduction="sum"), atol=1e-6, rtol=1e-5)
    assert calls == [torch.Size([300, 1001])]


def test_the_fill_overwrites_whatever_the_memory_held():
    # freed memory full of NaN is handed out again for the gradient: every element must be written
    junk = torch.full((300, 1001), float("nan"))
    del junk
    z = torch.randn(300, 1001, requires_grad=True)
    t = torch.zeros(300, dtype=torch.long)
    native_nll(z, t, reduction="sum").backward()
    assert torch.count_nonzero(z.grad) == 300
    assert torch.equal(z.grad[:, 0], torch.full((300,), -1.0))
