"""The kernels split rows (or element chunks) over torch.get_num_threads() threads; every result
depends only on its own rows or chunks, so values and gradients are bit-identical for any count."""

from __future__ import annotations

import warnings

import pytest
import torch

import crossent
from tests.native.native_env import needs_native

pytestmark = [needs_native, pytest.mark.usefixtures("restore_threads")]


def _run(threads: int, fn, inputs: list[torch.Tensor], grad_args: tuple[int, ...]) -> list[torch.Tensor]:
    torch.set_num_threads(threads)
    args = [t.clone().requires_grad_(i in grad_args) for i, t in enumerate(inputs)]
    out = fn(*args)
    g = torch.ones_like(out) if out.dim() == 0 else torch.linspace(0.5, 1.5, out.numel()).view(out.shape).to(out.dtype)
    grads = torch.autograd.grad(out, [args[i] for i in grad_args], g)
    return [out.detach(), *grads]


def _kl(x, t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return crossent.kl_div(x, t, reduction="mean", impl="native")


def _cases():
    n, c = 512, 4099
    t = torch.randint(0, c, (n,))
    t[::9] = -100
    w = torch.rand(c)
    return {
        "cross_entropy-indices": (
            lambda x: crossent.cross_entropy(x, t, w, label_smoothing=0.1, impl="native"),
            lambda: [torch.randn(n, c) * 3],
            (0,),
        ),
        "cross_entropy-indices-none": (
            lambda x: crossent.cross_entropy(x, t, reduction="none", impl="native"),
            lambda: [torch.randn(n, c) * 3],
            (0,),
        ),
        "cross_entropy-probabilities": (
            lambda x, p: crossent.cross_entropy(x, p, reduction="sum", impl="native"),
            lambda: [torch.randn(n, c), torch.rand(n, c)],
            (0,),
        ),
        "cross_entropy-bfloat16": (
            lambda x: crossent.cross_entropy(x, t, impl="native"),
            lambda: [torch.randn(n, c).bfloat16()],
            (0,),
        ),
        "binary_cross_entropy_with_logits-mean": (
            lambda x, y: crossent.binary_cross_entropy_with_logits(
                x, y, reduction="mean", pos_weight=torch.linspace(0.5, 2, 300), impl="native"
            ),
            lambda: [torch.randn(4096, 300) * 3, torch.rand(4096, 300)],
            (0, 1),
        ),
        "binary_cross_entropy-sum": (
            lambda x, y: crossent.binary_cross_entropy(x, y, reduction="sum", impl="native"),
            lambda: [torch.rand(4096, 300).clamp(1e-4, 1 - 1e-4), torch.rand(4096, 300)],
            (0, 1),
        ),
        "kl_div-mean-float16": (_kl, lambda: [torch.randn(4096, 300).half(), torch.rand(4096, 300).half()], (0, 1)),
        "log_softmax": (
            lambda x: crossent.log_softmax(x, 1, impl="native"),
            lambda: [torch.randn(512, 2048) * 3],
            (0,),
        ),
        "softmax-float16": (
            lambda x: crossent.softmax(x, 1, impl="native"),
            lambda: [torch.randn(512, 2048).half()],
            (0,),
        ),
        "nll_loss": (
            lambda z: crossent.nll_loss(z, t, impl="native"),
            lambda: [torch.randn(n, c)],
            (0,),
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bit_identical_for_any_thread_count(case):
    fn, make, grad_args = case
    inputs = make()
    one = _run(1, fn, inputs, grad_args)
    for threads in (2, 3):
        other = _run(threads, fn, inputs, grad_args)
        for i, (a, b) in enumerate(zip(one, other, strict=True)):
            assert a.dtype == b.dtype and torch.equal(a, b), f"result {i} differs with {threads} threads"


def test_the_thread_count_is_left_alone():
    torch.set_num_threads(2)
    x = torch.randn(512, 2048, requires_grad=True)
    crossent.cross_entropy(x, torch.randint(0, 2048, (512,)), impl="native").backward()
    crossent.log_softmax(x, 1, impl="native").sum().backward()
    assert torch.get_num_threads() == 2
