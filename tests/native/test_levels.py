"""Every instruction-set level this CPU runs (avx512, avx2, scalar) gives the PyTorch path's results
within float32 rounding, and float64's: values and gradients."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent.native import _library, kernels
from tests.helpers import check_against
from tests.native.native_env import in_float64

ATOL, RTOL = 2e-6, 2e-5


def _quiet(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # kl_div's 'mean'
            return fn(*args, **kwargs)

    return run


# name: (crossent function, torch function, inputs, kwargs, grad_args)
CASES = {
    "cross_entropy-indices": (
        crossent.cross_entropy,
        F.cross_entropy,
        lambda: (torch.randn(37, 1029) * 3, torch.randint(0, 1029, (37,)).index_fill_(0, torch.arange(0, 37, 5), -100)),
        dict(weight=torch.rand(1029), label_smoothing=0.1),
        (0,),
    ),
    "cross_entropy-indices-none": (
        crossent.cross_entropy,
        F.cross_entropy,
        lambda: (torch.randn(37, 1029) * 3, torch.randint(0, 1029, (37,))),
        dict(reduction="none"),
        (0,),
    ),
    "cross_entropy-probabilities": (
        crossent.cross_entropy,
        F.cross_entropy,
        lambda: (torch.randn(37, 1029) * 3, torch.rand(37, 1029)),
        dict(reduction="sum", label_smoothing=0.05),
        (0,),
    ),
    "log_softmax": (crossent.log_softmax, F.log_softmax, lambda: (torch.randn(33, 2051) * 5, -1), {}, (0,)),
    "softmax": (crossent.softmax, F.softmax, lambda: (torch.randn(33, 2051) * 5, -1), {}, (0,)),
    "binary_cross_entropy_with_logits": (
        crossent.binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        lambda: (torch.randn(300, 41) * 6, torch.rand(300, 41)),
        dict(weight=torch.rand(41), pos_weight=torch.rand(41) * 3, reduction="none"),
        (0, 1),
    ),
    "binary_cross_entropy_with_logits-mean": (
        crossent.binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        lambda: (torch.randn(300, 41) * 6, torch.rand(300, 41)),
        {},
        (0, 1),
    ),
    "binary_cross_entropy": (
        crossent.binary_cross_entropy,
        F.binary_cross_entropy,
        lambda: (torch.rand(300, 41).clamp(1e-4, 1 - 1e-4), torch.rand(300, 41)),
        dict(reduction="sum"),
        (0, 1),
    ),
    "kl_div": (
        _quiet(crossent.kl_div),
        _quiet(F.kl_div),
        lambda: (torch.randn(300, 41).log_softmax(1), torch.rand(300, 41)),
        dict(reduction="mean"),
        (0, 1),
    ),
    "kl_div-log-target": (
        crossent.kl_div,
        F.kl_div,
        lambda: (torch.randn(300, 41).log_softmax(1), torch.randn(300, 41).log_softmax(1)),
        dict(reduction="batchmean", log_target=True),
        (0, 1),
    ),
    "nll_loss": (
        crossent.nll_loss,
        F.nll_loss,
        lambda: (torch.randn(37, 101).log_softmax(1), torch.randint(0, 101, (37,))),
        dict(weight=torch.rand(101)),
        (0,),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_level_matches_the_torch_path_and_float64(level, name, monkeypatch):
    ours, theirs, make, kwargs, grad_args = CASES[name]
    used = []
    handle = _library.library().handle
    assert _library.library().level == level
    real = kernels._handle
    monkeypatch.setattr(kernels, "_handle", lambda: used.append(real()) or real())
    native = functools.partial(ours, impl="native")
    torch_path = functools.partial(ours, impl="torch")
    inputs = make()
    check_against(native, torch_path, inputs, kwargs, grad_args=grad_args, atol=ATOL, rtol=RTOL)
    check_against(native, in_float64(theirs), inputs, kwargs, grad_args=grad_args, atol=ATOL, rtol=RTOL)
    assert used and all(h is handle for h in used), "the kernels of another level ran"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_half_results_are_the_float32_results_rounded(level, dtype, op):
    # the kernels compute in float32: a half row's result is the float32 result rounded to nearest even,
    # subnormals, infinities and NaN included; the same for the backward
    x = torch.randn(64, 513) * 12
    x[3, 7] = float("inf")
    x[4, 0] = float("nan")
    x[5] = -float("inf")
    x[6] = torch.linspace(-30, 0, 513)  # softmax results down to float16 subnormals
    x = x.to(dtype)
    g = torch.randn(64, 513).to(dtype)
    half = getattr(crossent, op)(x, 1, impl="native")
    single = getattr(crossent, op)(x.float(), 1, impl="native")
    # the backward from the same (half) output
    log = op == "log_softmax"
    half_grad = kernels.softmax_rows_backward(g, half, log)
    single_grad = kernels.softmax_rows_backward(g.float(), half.float(), log)
    assert half.dtype == half_grad.dtype == dtype
    for a, b in ((half, single), (half_grad, single_grad)):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(a.nan_to_num(), b.to(dtype).nan_to_num())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_half_cross_entropy_gradient_is_the_float32_one_rounded(level, dtype, probability):
    x = (torch.randn(48, 700) * 4).to(dtype)
    t = torch.rand(48, 700).to(dtype) if probability else torch.randint(0, 700, (48,))
    half_x, single_x = x.clone().requires_grad_(), x.float().requires_grad_()
    loss_h = crossent.cross_entropy(half_x, t, reduction="sum", label_smoothing=0.1, impl="native")
    loss_s = crossent.cross_entropy(
        single_x, t.float() if probability else t, reduction="sum", label_smoothing=0.1, impl="native"
    )
    loss_h.backward()
    loss_s.backward()
    assert loss_h.dtype == half_x.grad.dtype == dtype
    assert torch.equal(loss_h, loss_s.to(dtype))
    assert torch.equal(half_x.grad, single_x.grad.to(dtype))
