"""softmax and log_softmax on the native kernels against torch.nn.functional in float64, forward and
backward, along the last dim or a dim followed only by dims of size 1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch
from crossent.native import kernels
from tests.helpers import check_against
from tests.native.native_env import in_float64, needs_native

pytestmark = needs_native

ATOL, RTOL = 1e-6, 1e-5
OPS = ["log_softmax", "softmax"]

# (shape, dim): the dim and everything after it is a row of the kernels
CASES = [
    ((), 0),
    ((1,), 0),
    ((7,), -1),
    ((0, 5), 1),
    ((5, 1), 1),
    ((3, 1000), -1),
    ((67, 17), 1),
    ((2, 3, 4099), 2),
    ((6, 9, 1), 1),
    ((6, 9, 1, 1), -3),
    ((9, 1, 1), 0),
]


def _ours(op: str):
    return lambda x, dim: getattr(crossent, op)(x, dim, impl="native")


def _theirs(op: str):
    return in_float64(lambda x, dim: getattr(F, op)(x, dim))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape, dim", CASES, ids=[f"{s}-{d}" for s, d in CASES])
def test_matches_float64(op, shape, dim):
    x = torch.randn(shape) * 4
    d = dim % max(x.dim(), 1)
    spec = _dispatch.spec_of(x, inner=math.prod(x.shape[d + 1 :]), classes=x.shape[d] if x.dim() else 1)
    assert _dispatch.resolve(op, "auto", x.device, spec) == "native"
    check_against(_ours(op), _theirs(op), (x, dim), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("op", OPS)
def test_extreme_rows(op):
    inf, nan = math.inf, math.nan
    x = torch.randn(9, 6)
    x[0] = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4, 3.0])
    x[1] = torch.tensor([-1e4, -1e4, -1e4, -1e4, -1e4, -1e4])
    x[2, 3] = -inf
    x[3, 0] = inf  # a row with +inf: all NaN, as in torch
    x[4, 5] = nan
    x[5] = -inf  # only -inf: all NaN
    x[6] = torch.tensor([-inf, -inf, 2.0, -inf, -inf, -inf])
    x[7] = torch.tensor([3e38, -3e38, 3e38, 0.0, 1.0, 2.0])
    x[8] = torch.tensor([-3e38, -3e38, -3e38, -3e38, -3e38, -3e38])
    for rows in [slice(None), *[slice(i, i + 1) for i in range(9)]]:
        if op == "log_softmax" and rows in (slice(None), slice(7, 8)):
            # (x - max) underflows float32 to -inf where float64 keeps -6e38: compare to torch's float32
            check_against(_ours(op), lambda x, d: F.log_softmax(x, d), (x[rows], 1), atol=ATOL, rtol=RTOL)
            continue
        check_against(_ours(op), _theirs(op), (x[rows], 1), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_input_and_upstream(op):
    x = torch.randn(40, 30).t()
    g = torch.randn(40, 30).t()
    check_against(_ours(op), _theirs(op), (x, 1), atol=ATOL, rtol=RTOL, grad_output=g)


@pytest.mark.parametrize("op", OPS)
def test_retained_graph(op):
    x = torch.randn(13, 29, requires_grad=True)
    y = getattr(crossent, op)(x, 1, impl="native")
    g = torch.randn_like(y)
    (first,) = torch.autograd.grad(y, x, g, retain_graph=True)
    (second,) = torch.autograd.grad(y, x, g)
    assert torch.equal(first, second)


def test_auto_runs_the_native_kernel(monkeypatch):
    calls = []
    eager = kernels.softmax_rows.eager
    monkeypatch.setattr(kernels.softmax_rows, "eager", lambda x, log: calls.append(log) or eager(x, log))
    x = torch.randn(5, 7, 1)
    crossent.log_softmax(x, 1)
    crossent.softmax(x, -2)
    crossent.softmax(x, 0)  # not followed by size-1 dims only: the PyTorch path
    crossent.log_softmax(x.double(), 1)  # float64: the PyTorch path
    assert calls == [True, False]
