"""bfloat16/float16: error against a float64 ground truth no worse than the naive half-precision loss.

The ground truth is the float64 loss of the same (half-precision) inputs. The fused loss forms the
logits gradient in float32 and accumulates the weight and bias gradients in float32, so it is usually
clearly better than the naive loss; opting into half-precision accumulation (``acc_dtype``) is not.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from crossent.fused import linear_cross_entropy

N, H, V = 512, 64, 1024


def _run(fn, dtype, h, w, b):
    h, w, b = (t.to(dtype).clone().requires_grad_() for t in (h, w, b))
    out = fn(h, w, b)
    out.backward(torch.ones_like(out))
    return [t.detach().double() for t in (out, h.grad, w.grad, b.grad)]


def _relative_errors(result, truth):
    return [float((r - t).norm() / t.norm()) for r, t in zip(result, truth, strict=True)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_error_no_worse_than_naive(dtype, reduction):
    h = torch.randn(N, H).to(dtype)
    w = (torch.randn(V, H) / H**0.5).to(dtype)
    b = torch.randn(V).to(dtype)
    y = torch.randint(0, V, (N,))
    y[::10] = -100

    def naive(h, w, b):
        return TF.cross_entropy(TF.linear(h, w, b), y, reduction=reduction)

    def fused(h, w, b):
        return linear_cross_entropy(h, w, y, linear_bias=b, reduction=reduction, chunk_size=100)

    truth = _run(naive, torch.float64, h, w, b)
    naive_errors = _relative_errors(_run(naive, dtype, h, w, b), truth)
    fused_errors = _relative_errors(_run(fused, dtype, h, w, b), truth)
    # the loss cannot beat correct rounding to the output dtype: allow half an ulp
    half_ulp = torch.finfo(dtype).eps / 2
    assert fused_errors[0] <= max(naive_errors[0], half_ulp)
    names = ("input", "weight", "bias")
    for name, fused_error, naive_error in zip(names, fused_errors[1:], naive_errors[1:], strict=True):
        assert fused_error <= naive_error, f"{name} gradient: {fused_error:.3g} > naive {naive_error:.3g}"


def test_weight_gradient_accumulates_in_float32():
    """Summing 4096 rows into a bfloat16 weight gradient loses bits that the float32 default keeps."""
    h = torch.randn(4096, 16).bfloat16()
    w = (torch.randn(64, 16) / 4).bfloat16()
    y = torch.randint(0, 64, (4096,))

    def weight_grad(dtype, **kwargs):
        ww = w.to(dtype).requires_grad_()
        linear_cross_entropy(h.to(dtype), ww, y, reduction="sum", chunk_size=64, **kwargs).backward()
        return ww.grad.double()

    truth = weight_grad(torch.float64)
    default = weight_grad(torch.bfloat16)
    in_bf16 = weight_grad(torch.bfloat16, options=torch.nn.LinearCrossEntropyOptions(acc_dtype=torch.bfloat16))
    assert (default - truth).norm() * 4 < (in_bf16 - truth).norm()
