"""binary_cross_entropy, binary_cross_entropy_with_logits and kl_div on the native kernels against
torch.nn.functional in float64: every weight shape the kernels take, every reduction, both gradients."""

from __future__ import annotations

import functools
import math
import warnings

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
SHAPES = [(), (1,), (7,), (4, 5), (33, 17), (3, 4, 5), (5000, 3)]  # the last: two 4096-element chunks


def _weights(kind: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """None, a full weight, or one over the last dim: (C,) or (1, C)."""
    if kind == "none":
        return None
    if kind == "full":
        return torch.rand(shape) + 0.5
    c = shape[-1] if shape else 1
    w = torch.rand(c) + 0.5
    return w if kind == "(C,)" else w.view(1, c)


def _native(op: str):
    return functools.partial(getattr(crossent, op), impl="native")


def _bce_inputs(shape):
    x = torch.rand(shape).clamp(1e-3, 1 - 1e-3)
    y = torch.rand(shape)
    return x, y


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weight", ["none", "full", "(C,)", "(1,C)"])
def test_binary_cross_entropy(reduction, weight):
    for shape in SHAPES:
        if weight == "(1,C)" and len(shape) < 2 or weight == "(C,)" and not shape:
            continue
        x, y = _bce_inputs(shape)
        w = _weights(weight, shape)
        kwargs = dict(weight=w, reduction=reduction)
        check_against(
            _native("binary_cross_entropy"),
            in_float64(F.binary_cross_entropy),
            (x, y),
            kwargs,
            grad_args=(0, 1),
            atol=ATOL,
            rtol=RTOL,
        )


def test_binary_cross_entropy_at_0_and_1():
    # each log is clamped at -100 before it is multiplied; the gradient's denominator at 1e-12
    x = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5, 1e-30, 1 - 2**-24, 0.0, 1.0])
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.25, 0.75])
    for reduction in ("none", "sum", "mean"):
        check_against(
            _native("binary_cross_entropy"),
            in_float64(F.binary_cross_entropy),
            (x, y),
            dict(reduction=reduction),
            grad_args=(0,),
            atol=ATOL,
            rtol=RTOL,
        )
    # d/dy = log(1 - x) - log(x) is infinite at 0 and 1, as in torch
    check_against(
        _native("binary_cross_entropy"),
        in_float64(F.binary_cross_entropy),
        (x[4:7], y[4:7]),
        dict(reduction="none"),
        grad_args=(0, 1),
        atol=ATOL,
        rtol=RTOL,
    )
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    _native("binary_cross_entropy")(xg, yg, reduction="sum").backward()
    x64, y64 = x.double().requires_grad_(), y.double().requires_grad_()
    F.binary_cross_entropy(x64, y64, reduction="sum").backward()
    torch.testing.assert_close(yg.grad, y64.grad.float(), atol=ATOL, rtol=RTOL, equal_nan=True)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weight", ["none", "full", "(C,)", "(1,C)"])
@pytest.mark.parametrize("pos_weight", [False, True], ids=["no-pos-weight", "pos-weight"])
def test_binary_cross_entropy_with_logits(reduction, weight, pos_weight):
    for shape in SHAPES:
        if weight == "(1,C)" and len(shape) < 2 or (pos_weight or weight == "(C,)") and not shape:
            continue
        x = torch.randn(shape) * 4
        y = torch.rand(shape)
        pw = torch.rand(shape[-1]) * 3 if pos_weight else None
        kwargs = dict(weight=_weights(weight, shape), reduction=reduction, pos_weight=pw)
        check_against(
            _native("binary_cross_entropy_with_logits"),
            in_float64(F.binary_cross_entropy_with_logits),
            (x, y),
            kwargs,
            grad_args=(0, 1),
            atol=ATOL,
            rtol=RTOL,
        )


@pytest.mark.parametrize("infinite", [False, True], ids=["finite", "infinite"])
def test_binary_cross_entropy_with_logits_extreme_logits(infinite):
    inf = math.inf
    x = torch.tensor([1e4, -1e4, 100.0, -100.0, 88.0, -88.0, 0.0, -0.0, 20.0, -20.0, 1e-8, 1e-30, -1e-30])
    y = torch.tensor([0.0, 1.0, 0.3, 0.7, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0])
    if infinite:  # the losses are NaN or inf; the gradients of the input too, of the target +-inf
        x = torch.tensor([inf, -inf, inf, -inf])
        y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    pw = torch.full(x.shape, 2.5)
    for kwargs in (dict(reduction="sum", pos_weight=pw), dict(reduction="none", pos_weight=pw)):
        check_against(
            _native("binary_cross_entropy_with_logits"),
            in_float64(F.binary_cross_entropy_with_logits),
            (x, y),
            kwargs,
            grad_args=(0, 1),
            atol=ATOL,
            rtol=RTOL,
        )
    # without pos_weight: the input gradient always, the target gradient for finite logits
    grad_args = (0,) if infinite else (0, 1)
    check_against(
        _native("binary_cross_entropy_with_logits"),
        in_float64(F.binary_cross_entropy_with_logits),
        (x, y),
        dict(reduction="none"),
        grad_args=grad_args,
        atol=ATOL,
        rtol=RTOL,
    )


@pytest.mark.parametrize("pos_weight", [None, 0.5], ids=["no-pos-weight", "pos-weight-below-1"])
def test_binary_cross_entropy_with_logits_target_gradient_at_minus_inf(pos_weight):
    x = torch.tensor([-math.inf, math.inf, 3.0])
    y = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    pw = None if pos_weight is None else torch.full((3,), pos_weight)
    _native("binary_cross_entropy_with_logits")(x, y, reduction="sum", pos_weight=pw).backward()
    y64 = y.detach().double().requires_grad_()
    F.binary_cross_entropy_with_logits(
        x.double(), y64, reduction="sum", pos_weight=None if pw is None else pw.double()
    ).backward()
    assert y64.grad[0].item() == math.inf
    torch.testing.assert_close(y.grad, y64.grad.float())


def _kl(reduction: str):
    def ours(x, t, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # 'mean' warns, as in torch
            return crossent.kl_div(x, t, reduction=reduction, impl="native", **kwargs)

    def theirs(x, t, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return F.kl_div(x, t, reduction=reduction, **kwargs)

    return ours, in_float64(theirs)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True], ids=["target", "log-target"])
def test_kl_div(reduction, log_target):
    ours, theirs = _kl(reduction)
    for shape in SHAPES:
        x = torch.randn(shape).log_softmax(-1) if shape else torch.tensor(-0.7)
        t = torch.rand(shape)
        if log_target:
            t = t.log()
        elif t.numel():
            t.view(-1)[::4] = 0.0  # zero-probability classes: 0 loss, NaN target gradient (as in torch)
        check_against(ours, theirs, (x, t), dict(log_target=log_target), grad_args=(0, 1), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("log_target", [False, True], ids=["target", "log-target"])
def test_kl_div_input_gradient_only(log_target):
    ours, theirs = _kl("batchmean")
    x = torch.randn(9, 11).log_softmax(1)
    t = torch.rand(9, 11).softmax(1)
    t = t.log() if log_target else t
    check_against(ours, theirs, (x, t), dict(log_target=log_target), grad_args=(0,), atol=ATOL, rtol=RTOL)
    check_against(ours, theirs, (x, t), dict(log_target=log_target), grad_args=(1,), atol=ATOL, rtol=RTOL)


def test_a_half_chunk_sum_is_deterministic_and_exact_enough():
    # 'sum' over 5 chunks of 4096: chunk sums in float32, added in float64
    x = torch.randn(20000) * 3
    y = torch.rand(20000)
    ours = _native("binary_cross_entropy_with_logits")(x, y, reduction="sum")
    truth = F.binary_cross_entropy_with_logits(x.double(), y.double(), reduction="sum")
    assert abs(ours.item() - truth.item()) <= 1e-5 * abs(truth.item())


def test_auto_runs_the_native_kernels(monkeypatch):
    calls = []
    eager = kernels.elementwise_loss.eager
    monkeypatch.setattr(kernels.elementwise_loss, "eager", lambda op, *a: calls.append(op) or eager(op, *a))
    x, y = _bce_inputs((6, 5))
    crossent.binary_cross_entropy(x, y, torch.rand(5))
    crossent.binary_cross_entropy(x, y, torch.rand(6, 1))  # does not repeat over leading dims: PyTorch
    crossent.binary_cross_entropy_with_logits(x, y, pos_weight=torch.rand(5))
    crossent.binary_cross_entropy_with_logits(x, y.double())  # mixed dtypes: PyTorch
    crossent.kl_div(x.log(), y, reduction="batchmean")
    crossent.kl_div(x.log(), y[:1], reduction="batchmean")  # a broadcast target: PyTorch
    assert calls == ["binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]
    spec = _dispatch.spec_of(x, weight=True, repeating=False)
    assert _dispatch.resolve("binary_cross_entropy", "auto", x.device, spec) == "torch"
