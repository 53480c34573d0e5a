"""torch.compile(fullgraph=True) traces linear_cross_entropy, forward and backward, with no graph break.

Under compile every row is kept (ignored ones are masked instead of dropped), so the compiled
results must equal the eager ones. ``aot_eager`` checks the tracing of every path quickly; one
Inductor run checks code generation end to end.
"""

from __future__ import annotations

import pytest
import torch

from crossent.fused import linear_cross_entropy


def _problem():
    h = torch.randn(7, 5, requires_grad=True)
    w = torch.randn(11, 5, requires_grad=True)
    b = torch.randn(11, requires_grad=True)
    y = torch.randint(0, 11, (7,))
    y[::3] = -100
    return h, w, b, y


def _loss_and_grads(fn, reduction):
    h, w, b, y = _problem()
    out = fn(h, w, b, y, reduction)
    g = torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)
    return (out.detach(), *torch.autograd.grad(out, (h, w, b), g))


def _fused(h, w, b, y, reduction):
    return linear_cross_entropy(h, w, y, linear_bias=b, reduction=reduction, label_smoothing=0.1, chunk_size=4)


@pytest.mark.parametrize(
    ("backend", "reduction"),
    [("aot_eager", "mean"), ("aot_eager", "sum"), ("aot_eager", "none"), ("inductor", "mean")],
)
def test_fullgraph_matches_eager(backend, reduction):
    torch._dynamo.reset()
    compiled = torch.compile(_fused, fullgraph=True, backend=backend)
    torch.manual_seed(1)
    expected = _loss_and_grads(_fused, reduction)
    torch.manual_seed(1)
    actual = _loss_and_grads(compiled, reduction)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
