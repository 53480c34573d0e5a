"""Memory safety of the native path: nothing is written into storage that autograd or the caller still
needs, inputs are never modified (but by inplace_backward, as documented), and every size is safe."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import crossent
from tests.native.native_env import needs_native

pytestmark = needs_native


def test_inplace_backward_cannot_overwrite_logits_another_op_saved():
    h = torch.randn(6, 9, requires_grad=True)
    t = torch.randint(0, 9, (6,))
    logits = h * 1.0
    other = (logits**2).sum()  # saves logits for its backward
    loss = crossent.cross_entropy(logits, t, inplace_backward=True, impl="native") + other
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_second_backward_after_inplace_backward_raises():
    h = torch.randn(6, 9, requires_grad=True)
    loss = crossent.cross_entropy(h * 1.0, torch.randint(0, 9, (6,)), inplace_backward=True, impl="native")
    loss.backward(retain_graph=True)
    first = h.grad.clone()
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
    assert torch.equal(h.grad, first)


def test_inplace_backward_leaves_non_contiguous_logits_alone():
    h = torch.randn(9, 6, requires_grad=True)
    logits = (h * 1.0).t()
    before = logits.detach().clone()
    t = torch.randint(0, 9, (6,))
    crossent.cross_entropy(logits, t, inplace_backward=True, impl="native").backward()
    assert torch.equal(logits.detach(), before)
    h64 = h.detach().double().requires_grad_()
    torch.nn.functional.cross_entropy(h64.t(), t).backward()
    torch.testing.assert_close(h.grad, h64.grad.float())


def test_a_saved_output_modified_in_place_is_caught():
    # the backward reads the forward's output: changing it in place raises (here already at the
    # write, as the output is a view made inside the autograd Function), never a wrong gradient
    for op in ("softmax", "log_softmax"):
        x = torch.randn(4, 7, requires_grad=True)
        y = getattr(crossent, op)(x, 1, impl="native")
        with pytest.raises(RuntimeError, match="inplace"):
            y.mul_(2)
            y.sum().backward()


def test_a_handed_out_gradient_may_be_modified():
    # the first backward hands the forward's gradient to autograd; zeroing .grad (as optimizers do)
    # must not change what a retained graph's next backward computes
    x = torch.randn(7, 11, requires_grad=True)
    t = torch.randint(0, 11, (7,))
    loss = crossent.cross_entropy(x, t, label_smoothing=0.1, impl="native")
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad.mul_(-3.0)
    x.grad.zero_()
    loss.backward()
    torch.testing.assert_close(x.grad, first, atol=1e-7, rtol=1e-6)


def _kl(x, t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return crossent.kl_div(x, t, reduction="mean", impl="native")


# name: (function, inputs, which inputs require grad)
CALLS = {
    "cross_entropy-indices": (
        lambda x, t: crossent.cross_entropy(x, t, label_smoothing=0.1, impl="native"),
        lambda: [torch.randn(9, 13), torch.tensor([0, 1, -100, 3, 4, 12, 6, 7, 8])],
        (0,),
    ),
    "cross_entropy-weighted-none": (
        lambda x, t, w: crossent.cross_entropy(x, t, w, reduction="none", impl="native"),
        lambda: [torch.randn(9, 13), torch.randint(0, 13, (9,)), torch.rand(13)],
        (0,),
    ),
    "cross_entropy-probabilities": (
        lambda x, p: crossent.cross_entropy(x, p, reduction="sum", impl="native"),
        lambda: [torch.randn(9, 13), torch.rand(9, 13)],
        (0,),
    ),
    "nll_loss": (
        lambda z, t: crossent.nll_loss(z, t, impl="native"),
        lambda: [torch.randn(9, 13), torch.randint(0, 13, (9,))],
        (0,),
    ),
    "log_softmax": (lambda x: crossent.log_softmax(x, -1, impl="native"), lambda: [torch.randn(9, 13)], (0,)),
    "softmax": (lambda x: crossent.softmax(x, -1, impl="native"), lambda: [torch.randn(9, 13)], (0,)),
    "binary_cross_entropy": (
        lambda x, y, w: crossent.binary_cross_entropy(x, y, w, impl="native"),
        lambda: [torch.rand(9, 13), torch.rand(9, 13), torch.rand(13)],
        (0, 1),
    ),
    "binary_cross_entropy_with_logits": (
        lambda x, y, w, pw: crossent.binary_cross_entropy_with_logits(
            x, y, w, reduction="none", pos_weight=pw, impl="native"
        ),
        lambda: [torch.randn(9, 13), torch.rand(9, 13), torch.rand(1, 13), torch.rand(13)],
        (0, 1),
    ),
    "kl_div": (_kl, lambda: [torch.randn(9, 13).log_softmax(1), torch.rand(9, 13)], (0, 1)),
    "kl_div-log-target": (
        lambda x, t: crossent.kl_div(x, t, reduction="batchmean", log_target=True, impl="native"),
        lambda: [torch.randn(9, 13).log_softmax(1), torch.randn(9, 13).log_softmax(1)],
        (0, 1),
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", CALLS)
def test_inputs_are_never_modified(name, dtype):
    fn, make, grad_args = CALLS[name]
    inputs = [t.to(dtype) if t.is_floating_point() else t for t in make()]
    args = [t.clone().requires_grad_(i in grad_args) for i, t in enumerate(inputs)]
    before = [a.detach().clone() for a in args]
    out = fn(*args)
    upstream = torch.rand_like(out)
    wanted = [args[i] for i in grad_args]
    first = [g.clone() for g in torch.autograd.grad(out, wanted, upstream, retain_graph=True)]
    second = torch.autograd.grad(out, wanted, upstream)
    for a, b in zip(args, before, strict=True):
        assert torch.equal(a.detach(), b), "an input changed"
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, **tol)


EMPTY_CALLS = {
    "bce": "crossent.binary_cross_entropy(torch.rand(0, 5), torch.rand(0, 5), reduction='none', impl='native')",
    "bce_with_logits": (
        "crossent.binary_cross_entropy_with_logits(torch.rand(0, 5), torch.rand(0, 5), reduction='none', impl='native')"
    ),
    "kl_div": "crossent.kl_div(torch.rand(0, 5), torch.rand(0, 5), reduction='none', impl='native')",
    "bce_with_logits-backward": (
        "x = torch.rand(0, 5, requires_grad=True); "
        "crossent.binary_cross_entropy_with_logits(x, torch.rand(0, 5), reduction='sum', impl='native').backward()"
    ),
}


def _run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_empty_elementwise_inputs_are_safe():
    code = "import torch, crossent\n" + "\n".join(
        f"print(repr({c}))" if "backward" not in c else c for c in EMPTY_CALLS.values()
    )
    done = _run_isolated(code + "\nprint('done')")
    assert done.returncode == 0 and done.stdout.strip().endswith("done"), (done.returncode, done.stderr[-2000:])


def test_empty_inputs_of_the_row_kernels():
    for shape in [(0, 5), (0, 5, 1)]:
        x = torch.randn(shape, requires_grad=True)
        t = torch.zeros(shape[:1] + shape[2:], dtype=torch.long)
        for reduction in ("none", "sum", "mean"):
            out = crossent.cross_entropy(x, t, reduction=reduction, impl="native")
            ref = torch.nn.functional.cross_entropy(x.detach(), t, reduction=reduction)
            torch.testing.assert_close(out.detach(), ref, equal_nan=True)
        y = crossent.log_softmax(x, 1, impl="native")
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape
    assert crossent.binary_cross_entropy_with_logits(torch.rand(0, 5), torch.rand(0, 5), reduction="sum").item() == 0
