"""bfloat16 and float16 on the native kernels (which compute in float32): the output dtype is torch's,
and the error against float64 (on the same rounded inputs) is no worse than torch's own computation in
that dtype: at most 1.5 times torch's error plus one ulp of the dtype at the result's magnitude (4 ulps
where torch's computation overflows)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import crossent
from tests.native.native_env import LOW, max_error, needs_native, ulp_at

pytestmark = [needs_native, pytest.mark.parametrize("dtype", LOW, ids=str)]


def _no_worse(dtype, ours: Callable, theirs: Callable, inputs: list[torch.Tensor], grad_args=(0,), upstream=True):
    """Run ``ours`` (crossent, native) and ``theirs`` (torch) on ``inputs`` rounded to ``dtype``, and
    ``theirs`` in float64 on the same values; compare the value and the gradients of ``grad_args``."""
    low = [t.to(dtype) if t.is_floating_point() else t for t in inputs]

    def run(fn, cast):
        args = [
            cast(t).detach().requires_grad_(i in grad_args) if t.is_floating_point() else t for i, t in enumerate(low)
        ]
        out = fn(*args)
        return out, args

    ours_out, ours_args = run(ours, lambda t: t)
    theirs_out, theirs_args = run(theirs, lambda t: t)
    truth_out, truth_args = run(theirs, lambda t: t.double())
    assert ours_out.dtype == theirs_out.dtype == dtype
    assert ours_out.shape == theirs_out.shape

    def check(what, a, b, truth):
        err_ours, err_torch = max_error(a, truth), max_error(b, truth)
        finite = truth[torch.isfinite(truth)]
        magnitude = finite.abs().max().item() if finite.numel() else 0.0
        bound = 1.5 * err_torch + ulp_at(magnitude, dtype)
        if math.isinf(err_torch):  # torch overflows the dtype on the way (float16 smoothing sums): 4 ulps
            bound = 4 * ulp_at(magnitude, dtype)
        assert err_ours <= bound, f"{what}: error {err_ours:.3g} > {bound:.3g} (torch's: {err_torch:.3g})"

    check("value", ours_out, theirs_out, truth_out)
    g = torch.rand(truth_out.shape, dtype=torch.float64) + 0.5 if upstream else torch.ones(truth_out.shape)
    grads = [
        torch.autograd.grad(out, [args[i] for i in grad_args], g.to(out.dtype))
        for out, args in ((ours_out, ours_args), (theirs_out, theirs_args), (truth_out, truth_args))
    ]
    for i, a, b, truth in zip(grad_args, *grads, strict=True):
        assert a.dtype == b.dtype == dtype
        check(f"gradient of argument {i}", a, b, truth)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(300, 37), (16, 4099)], ids=["300x37", "16x4099"])
def test_cross_entropy_class_indices(dtype, reduction, smoothing, shape):
    x = torch.randn(shape) * 4
    t = torch.randint(0, shape[1], shape[:1])
    t[::7] = -100
    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
    _no_worse(
        dtype,
        lambda x, t: crossent.cross_entropy(x, t, impl="native", **kwargs),
        lambda x, t: F.cross_entropy(x, t, **kwargs),
        [x, t],
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_probabilities(dtype, reduction, smoothing):
    x = torch.randn(200, 37) * 4
    p = torch.rand(200, 37).softmax(1)
    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
    _no_worse(
        dtype,
        lambda x, p: crossent.cross_entropy(x, p, impl="native", **kwargs),
        lambda x, p: F.cross_entropy(x, p, **kwargs),
        [x, p],
    )


@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_cross_entropy_with_a_class_weight(dtype, probability):
    x = torch.randn(24, 6) * 2
    t = torch.rand(24, 6) if probability else torch.arange(24) % 6  # classes 0..3 come first in the weight
    w = torch.rand(6) + 0.5
    _no_worse(
        dtype,
        lambda x, t, w: crossent.cross_entropy(x, t, w, reduction="none", impl="native"),
        lambda x, t, w: F.cross_entropy(x, t, w, reduction="none"),
        [x, t, w],
    )


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@pytest.mark.parametrize("shape", [(64, 33), (8, 4099)], ids=["64x33", "8x4099"])
def test_softmax_family(dtype, op, shape):
    x = torch.randn(shape) * 4
    _no_worse(dtype, lambda x: getattr(crossent, op)(x, -1, impl="native"), lambda x: getattr(F, op)(x, -1), [x])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_binary_cross_entropy_with_logits(dtype, reduction, weighted):
    x = torch.randn(300, 17) * 4
    y = torch.rand(300, 17)
    w = torch.rand(17) + 0.5 if weighted else None
    pw = torch.rand(17) * 3 if weighted else None

    def call(fn, **extra):
        return lambda x, y: fn(
            x, y, None if w is None else w.to(x.dtype), reduction=reduction,
            pos_weight=None if pw is None else pw.to(x.dtype), **extra
        )  # fmt: skip

    _no_worse(
        dtype,
        call(crossent.binary_cross_entropy_with_logits, impl="native"),
        call(F.binary_cross_entropy_with_logits),
        [x, y],
        grad_args=(0, 1),
    )


@pytest.mark.parametrize("reduction", ["none", "batchmean", "sum", "mean"])
@pytest.mark.parametrize("log_target", [False, True], ids=["target", "log-target"])
def test_kl_div(dtype, reduction, log_target):
    x = torch.randn(300, 17).log_softmax(1)
    t = torch.rand(300, 17).softmax(1)
    t = t.log() if log_target else t

    def call(fn, **extra):
        def run(x, t):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # 'mean' warns, in both
                return fn(x, t, reduction=reduction, log_target=log_target, **extra)

        return run

    _no_worse(dtype, call(crossent.kl_div, impl="native"), call(F.kl_div), [x, t], grad_args=(0, 1))


def test_a_huge_sum_stays_accurate(dtype):
    # float32 accumulation: within an ulp of the float64 sum over 40000 elements
    x = torch.randn(40_000).to(dtype)
    y = torch.rand(40_000).to(dtype)
    ours = crossent.binary_cross_entropy_with_logits(x, y, reduction="sum", impl="native")
    truth = F.binary_cross_entropy_with_logits(x.double(), y.double(), reduction="sum")
    assert ours.dtype == dtype
    assert abs(ours.double().item() - truth.item()) <= ulp_at(truth.item(), dtype)
    assert math.isfinite(ours.item())
