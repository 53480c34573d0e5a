"""crossent.linear_cross_entropy against the naive loss of the materialised logits, in float64.

Every test compares the value and the gradients of input, linear weight and bias (and, for
probability targets, of the target and class weight) with ``torch.nn.functional.cross_entropy`` of
``F.linear(input, W, b)``, under a random upstream gradient.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF

from crossent.fused import linear_cross_entropy
from tests.helpers import check_against

F64 = torch.float64
REDUCTIONS = ["none", "mean", "sum"]
H, C = 6, 11


def naive(h, w, b, y, class_weight=None, **kwargs):
    """The oracle: logits materialised by F.linear, flattened leading dims, torch's cross_entropy."""
    kwargs.pop("chunk_size", None)
    kwargs.pop("workspace_bytes", None)
    if kwargs.get("ignore_index") is None:
        kwargs["ignore_index"] = -100
    out_features = w.shape[1:-1]
    logits = TF.linear(h, w.reshape(math.prod(w.shape[:-1]), w.shape[-1]), None if b is None else b.reshape(-1))
    if h.dim() > 2:
        logits = logits.reshape(-1, w.shape[0])
        y = y.reshape(-1, w.shape[0]) if y.is_floating_point() else y.reshape(-1)
    elif out_features:
        logits = logits.reshape(h.shape[0], *w.shape[:-1])
    elif h.dim() == 1 and y.shape == (1,):
        y = y.reshape(())  # same loss; torch's backward of 'none' raises a size mismatch for target (1,)
    out = TF.cross_entropy(logits, y, weight=class_weight, **kwargs)
    if h.dim() > 2 and out.dim() > 0:
        out = out.reshape(h.shape[:-1])
    return out


def ours(h, w, b, y, class_weight=None, **kwargs):
    return linear_cross_entropy(h, w, y, linear_bias=b, weight=class_weight, **kwargs)


def class_targets(shape: tuple[int, ...], ignore: str, classes: int = C) -> torch.Tensor:
    y = torch.randint(0, classes, shape)
    if ignore == "some":
        y.view(-1)[::3] = -100
    elif ignore == "all":
        y.fill_(-100)
    return y


def probabilities(shape: tuple[int, ...], dim: int = -1) -> torch.Tensor:
    return torch.randn(shape, dtype=F64).softmax(dim)


@pytest.mark.parametrize("lead", [(7,), (2, 5)], ids=["N", "BT"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore", ["none", "some", "all"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_indices(lead, bias, weighted, ignore, eps, reduction):
    h = torch.randn(*lead, H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    b = torch.randn(C, dtype=F64) if bias else None
    y = class_targets(lead, ignore)
    cw = torch.rand(C, dtype=F64) + 0.1 if weighted else None
    kwargs = dict(reduction=reduction, label_smoothing=eps, chunk_size=3)
    grad_args = (0, 1, 2) if bias else (0, 1)
    check_against(ours, naive, (h, w, b, y, cw), kwargs, grad_args=grad_args)


@pytest.mark.parametrize("lead", [(7,), (2, 5)], ids=["N", "BT"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probabilities(lead, bias, weighted, eps, reduction):
    h = torch.randn(*lead, H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    b = torch.randn(C, dtype=F64) if bias else None
    p = probabilities((*lead, C))
    cw = torch.rand(C, dtype=F64) + 0.1 if weighted else None
    grad_args = (0, 1, 3) + ((2,) if bias else ()) + ((4,) if weighted else ())
    kwargs = dict(reduction=reduction, label_smoothing=eps, chunk_size=2)
    check_against(ours, naive, (h, w, b, p, cw), kwargs, grad_args=grad_args)


@pytest.mark.parametrize("chunk", [1, 2, 5, 6, 7, 100])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_chunk_sizes(chunk, reduction, block_size):
    h = torch.randn(13, H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    b = torch.randn(C, dtype=F64)
    y = class_targets((13,), "some")
    kwargs = dict(reduction=reduction, label_smoothing=0.1, chunk_size=chunk)
    check_against(ours, naive, (h, w, b, y, None), kwargs, grad_args=(0, 1, 2))


@pytest.mark.parametrize("budget", [1, 8 * C * 3, 10**9])
def test_workspace_budget(budget):
    h = torch.randn(9, H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    y = class_targets((9,), "some")
    check_against(ours, naive, (h, w, None, y, None), dict(workspace_bytes=budget), grad_args=(0, 1))


@pytest.mark.parametrize("prob", [False, True], ids=["indices", "probabilities"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_k_dimensional(prob, reduction):
    h = torch.randn(5, H, dtype=F64)
    w = torch.randn(C, 2, 3, H, dtype=F64)
    b = torch.randn(C, 2, 3, dtype=F64)
    y = probabilities((5, C, 2, 3), dim=1) if prob else class_targets((5, 2, 3), "some")
    grad_args = (0, 1, 2, 3) if prob else (0, 1, 2)
    kwargs = dict(reduction=reduction, label_smoothing=0.1, chunk_size=2)
    check_against(ours, naive, (h, w, b, y, None), kwargs, grad_args=grad_args)


@pytest.mark.parametrize("target", ["scalar", "one", "probabilities"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched(target, reduction):
    h = torch.randn(H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    b = torch.randn(C, dtype=F64)
    y = {"scalar": torch.tensor(3), "one": torch.tensor([3]), "probabilities": probabilities((C,))}[target]
    check_against(ours, naive, (h, w, b, y, None), dict(reduction=reduction), grad_args=(0, 1, 2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_uint8_targets_and_ignore_index(reduction):
    h = torch.randn(8, H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    y = torch.randint(0, C, (8,), dtype=torch.uint8)
    kwargs = dict(reduction=reduction, ignore_index=int(y[0]), chunk_size=3)
    check_against(ours, naive, (h, w, None, y, None), kwargs, grad_args=(0, 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0, H, C), (4, H, 0), (4, 0, C)], ids=["no-rows", "no-classes", "no-features"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_empty(reduction, shape, eps):
    n, hidden, classes = shape
    h = torch.randn(n, hidden, dtype=F64)
    w = torch.randn(classes, hidden, dtype=F64)
    b = torch.randn(classes, dtype=F64)
    y = torch.full((n,), -100) if classes == 0 else class_targets((n,), "some", classes)
    cw = torch.rand(classes, dtype=F64)
    kwargs = dict(reduction=reduction, label_smoothing=eps)
    check_against(ours, naive, (h, w, b, y, cw), kwargs, grad_args=(0, 1, 2))


def test_extreme_logits():
    """Logits of +-1000 (softmax saturates to 0 and 1) are exact."""
    h = torch.tensor([[1e3, 0.0], [0.0, -1e3], [3.0, 1.0]], dtype=F64)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    y = torch.tensor([1, 0, 2])
    check_against(ours, naive, (h, w, None, y, None), dict(reduction="sum"), grad_args=(0, 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignored_rows_never_reach_a_matmul(reduction):
    """An ignored row of NaN/inf hidden states is dropped: the result is that of the other rows alone.

    (The naive loss multiplies the row by a zero gradient and gets NaN in the weight gradient.)
    """
    h = torch.randn(5, H, dtype=F64)
    h[1] = float("nan")
    h[3] = float("inf")
    w = torch.randn(C, H, dtype=F64, requires_grad=True)
    y = class_targets((5,), "none")
    y[1] = y[3] = -100
    h.requires_grad_()
    out = linear_cross_entropy(h, w, y, reduction=reduction, chunk_size=2)
    kept = torch.tensor([0, 2, 4])
    expected = naive(h[kept], w, None, y[kept], reduction=reduction)
    if reduction == "none":
        torch.testing.assert_close(out[kept], expected)
        assert out[1] == 0 and out[3] == 0
        g = torch.rand(5, dtype=F64)
        grads = torch.autograd.grad(out, (h, w), g)
        expected_grads = torch.autograd.grad(expected, (h, w), g[kept])
    else:
        torch.testing.assert_close(out, expected)
        grads = torch.autograd.grad(out, (h, w))
        expected_grads = torch.autograd.grad(expected, (h, w))
    torch.testing.assert_close(grads[0][kept], expected_grads[0][kept])
    assert (grads[0][1] == 0).all() and (grads[0][3] == 0).all()
    torch.testing.assert_close(grads[1], expected_grads[1])


@pytest.mark.parametrize("which", ["input", "weight", "bias"])
def test_only_some_inputs_require_grad(which):
    h = torch.randn(6, H, dtype=F64)
    w = torch.randn(C, H, dtype=F64)
    b = torch.randn(C, dtype=F64)
    y = class_targets((6,), "some")
    check_against(ours, naive, (h, w, b, y, None), {}, grad_args=({"input": 0, "weight": 1, "bias": 2}[which],))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_grad_equals_grad_value(reduction):
    h = torch.randn(6, H, dtype=F64, requires_grad=True)
    w = torch.randn(C, H, dtype=F64, requires_grad=True)
    y = class_targets((6,), "some")
    with torch.no_grad():
        plain = linear_cross_entropy(h, w, y, reduction=reduction, chunk_size=4)
    assert not plain.requires_grad
    traced = linear_cross_entropy(h, w, y, reduction=reduction, chunk_size=4)
    torch.testing.assert_close(plain, traced.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_retain_graph_second_backward(reduction):
    """A second backward through a retained graph gives the same gradients (recomputed, not rescaled)."""
    h = torch.randn(6, H, dtype=F64, requires_grad=True)
    w = torch.randn(C, H, dtype=F64, requires_grad=True)
    y = class_targets((6,), "some")
    out = linear_cross_entropy(h, w, y, reduction=reduction, chunk_size=4)
    g1, g2 = torch.rand_like(out), torch.rand_like(out)
    first = torch.autograd.grad(out, (h, w), g1, retain_graph=True)
    second = torch.autograd.grad(out, (h, w), g2)
    ref = naive(h, w, None, y, reduction=reduction)
    for ours_grads, g in ((first, g1), (second, g2)):
        for a, e in zip(ours_grads, torch.autograd.grad(ref, (h, w), g, retain_graph=True), strict=True):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_gradients_accumulate_into_existing_grad():
    h = torch.randn(6, H, dtype=F64, requires_grad=True)
    w = torch.randn(C, H, dtype=F64, requires_grad=True)
    y = class_targets((6,), "some")
    for _ in range(2):
        linear_cross_entropy(h, w, y).backward()
    h_ref, w_ref = h.detach().requires_grad_(), w.detach().requires_grad_()
    (2 * naive(h_ref, w_ref, None, y)).backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-10, atol=1e-12)


def test_matches_torch_linear_cross_entropy():
    """Same numbers as torch's own F.linear_cross_entropy, chunked path included."""
    h = torch.randn(9, H, dtype=F64, requires_grad=True)
    w = torch.randn(C, H, dtype=F64, requires_grad=True)
    y = class_targets((9,), "some")
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4)
    ours_out = linear_cross_entropy(h, w, y, options=options)
    torch_out = TF.linear_cross_entropy(h, w, y, options=options)
    torch.testing.assert_close(ours_out, torch_out)
    for a, e in zip(torch.autograd.grad(ours_out, (h, w)), torch.autograd.grad(torch_out, (h, w)), strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float32(layout, bias, reduction):
    """float32 against the float64 naive loss, with contiguous and non-contiguous operands."""
    h = torch.randn(H, 13).t() if layout == "transposed" else torch.randn(13, H)
    w = torch.randn(H, 40).t() if layout == "transposed" else torch.randn(40, H)
    b = torch.randn(40) if bias else None
    y = class_targets((13,), "some", 40)
    cw = torch.rand(40) + 0.1
    kwargs = dict(reduction=reduction, label_smoothing=0.1, chunk_size=4)
    leaves = [t.detach().double().requires_grad_() for t in (h, w) + ((b,) if bias else ())]
    expected = naive(leaves[0], leaves[1], leaves[2] if bias else None, y, cw.double(), **kwargs)
    inputs = [t.requires_grad_() for t in (h, w) + ((b,) if bias else ())]
    out = ours(inputs[0], inputs[1], inputs[2] if bias else None, y, cw, **kwargs)
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    g = torch.rand_like(expected)
    for a, e in zip(torch.autograd.grad(out, inputs, g.float()), torch.autograd.grad(expected, leaves, g), strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-5)
