"""The focal and poly-1 losses on the native kernels (class indices without label smoothing): the kernel's
row statistics and its backward with a per-row factor ``h(log p_y)``, against crossent's PyTorch path and
a float64 torch composition, at every level; and the calls the kernels refuse, by name."""

from __future__ import annotations

import pytest
import torch

import crossent
from helpers import assert_close

F64 = torch.float64


def composed(x, target, weight, gamma, epsilon, softcap, reduction):
    """``m w_y f(log p_y)``, ``f(log p) = -(1 - p)^gamma log p + epsilon (1 - p)``, in torch's own ops."""
    z = softcap * torch.tanh(x / softcap) if softcap else x
    kept = target != -100
    safe = torch.where(kept, target, 0)
    log_p = z.log_softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)
    p = log_p.exp()
    w_y = weight[safe] if weight is not None else torch.ones_like(p)
    loss = torch.where(kept, w_y * (-((1 - p) ** gamma) * log_p + epsilon * (1 - p)), 0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / (w_y * kept).sum()


CASES = {
    "focal": (2.0, 0.0, False, None),
    "focal-weighted-softcap": (0.5, 0.0, True, 20.0),
    "poly1-weighted": (0.0, 0.8, True, None),
    "both": (1.5, -0.5, False, 10.0),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_focal_matches_float64_and_the_pytorch_path(case, reduction, dtype, level):
    gamma, epsilon, weighted, softcap = CASES[case]
    torch.manual_seed(7)
    x = (torch.randn(37, 53) * 4).to(dtype)
    target = torch.randint(0, 53, (37,))
    target[::4] = -100
    weight = (torch.rand(53) + 0.5).to(dtype) if weighted else None
    grad = torch.randn(37 if reduction == "none" else ()).to(dtype)
    results = {}
    for impl in ("native", "torch", "float64"):
        x1 = (x.double() if impl == "float64" else x.clone()).requires_grad_()
        if impl == "float64":
            loss = composed(x1, target, None if weight is None else weight.double(), gamma, epsilon, softcap, reduction)
        else:
            loss = crossent.cross_entropy(
                x1, target, weight, reduction=reduction, softcap=softcap, impl=impl, _modulation=(gamma, epsilon)
            )
            assert loss.dtype == dtype
        (loss * grad.to(loss.dtype)).sum().backward()
        results[impl] = (loss.detach().double(), x1.grad.double())
    for i, name in enumerate(("value", "gradient")):
        native = (results["native"][i] - results["float64"][i]).abs().max()
        pytorch = (results["torch"][i] - results["float64"][i]).abs().max()
        scale = results["float64"][i].abs().max()
        bound = 4e-6 if dtype == torch.float32 else 1e-2  # the output dtype's rounding of the result
        assert native <= 2 * pytorch + bound * scale, f"{name}: native {native:.3g}, PyTorch path {pytorch:.3g}"


def test_native_focal_is_chosen_and_the_smoothed_form_falls_back_by_name():
    x = torch.randn(8, 10, requires_grad=True)
    target = torch.randint(0, 10, (8,))
    ours = crossent.focal_loss(x, target, gamma=2.0)
    (grad,) = torch.autograd.grad(ours, x)
    x2 = x.detach().double().requires_grad_()
    expected = composed(x2, target, None, 2.0, 0.0, None, "mean")
    expected.backward()
    assert_close(ours.double(), expected, "value", 1e-6, 1e-6)
    assert_close(grad.double(), x2.grad, "gradient", 1e-6, 1e-6)
    with pytest.raises(RuntimeError, match="focal_gamma for class indices without label smoothing only"):
        crossent.cross_entropy(x, target, label_smoothing=0.1, impl="native", _modulation=(2.0, 0.0))
    with pytest.raises(RuntimeError, match="poly_epsilon for class indices without label smoothing only"):
        crossent.cross_entropy(x, x.detach().softmax(1), impl="native", _modulation=(0.0, 1.0))


def test_native_focal_retained_graph_and_in_place_backward():
    x = torch.randn(16, 12, requires_grad=True)
    target = torch.randint(0, 12, (16,))
    loss = crossent.cross_entropy(x, target, impl="native", _modulation=(2.0, 0.0))
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)
    logits = x.detach().clone().requires_grad_()
    view = logits * 1.0  # a non-leaf the backward may overwrite
    crossent.cross_entropy(view, target, impl="native", inplace_backward=True, _modulation=(2.0, 0.0)).backward()
    torch.testing.assert_close(logits.grad, first)
