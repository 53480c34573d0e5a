"""A retained graph backs up twice with torch's results, whatever the caller does between the two."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as TF

import crossent

F64 = torch.float64


def _twice(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], between: str) -> list[torch.Tensor]:
    """Gradients of the hidden states and weight after two backwards through one graph."""
    torch.manual_seed(0)
    hidden = torch.randn(6, 3, dtype=F64, requires_grad=True)
    weight = torch.randn(5, 3, dtype=F64, requires_grad=True)
    loss = loss_fn(hidden, weight)
    loss.backward(torch.ones_like(loss), retain_graph=True)
    first = [hidden.grad.clone(), weight.grad.clone()]
    if between == "zero_grad(set_to_none=False)":
        hidden.grad.zero_()
        weight.grad.zero_()
    elif between == "zero_grad(set_to_none=True)":
        hidden.grad = weight.grad = None
    loss.backward(torch.ones_like(loss))
    return first + [hidden.grad, weight.grad]


BETWEEN = ["zero_grad(set_to_none=False)", "zero_grad(set_to_none=True)", "accumulate"]
target = torch.tensor([0, 1, 2, -100, 4, 1])


@pytest.mark.parametrize("between", BETWEEN)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_loss_backward_twice_matches_torch(reduction, between):
    ours = _twice(lambda h, w: crossent.linear_cross_entropy(h, w, target, reduction=reduction), between)
    theirs = _twice(lambda h, w: TF.linear_cross_entropy(h, w, target, reduction=reduction), between)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("between", BETWEEN)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_backward_twice_matches_torch(reduction, between):
    def via(F):
        return lambda h, w: F.cross_entropy(h @ w.T, target, reduction=reduction, label_smoothing=0.1)

    for a, b in zip(_twice(via(crossent), between), _twice(via(TF), between), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_logits_edited_in_place_after_the_forward_are_caught_by_autograd(reduction):
    """The logits are saved for the backward (so ``save_on_cpu`` offloads them): editing them in place
    in between is autograd's in-place error, never a gradient computed from the edited values."""
    z = torch.randn(6, 5, dtype=F64, requires_grad=True)
    logits = z * 1.0
    loss = crossent.cross_entropy(logits, target, reduction=reduction)
    with torch.no_grad():
        logits.mul_(0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.sum().backward()


def test_saved_tensor_hooks_see_the_logits_and_the_precomputed_gradient():
    logits = torch.randn(6, 5, dtype=F64, requires_grad=True) * 1.0
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        crossent.cross_entropy(logits, target)
    assert any(t is logits or t.data_ptr() == logits.data_ptr() for t in saved)
    assert any(t.shape == logits.shape and t.data_ptr() != logits.data_ptr() for t in saved)


def test_save_on_cpu_gives_torchs_gradient():
    grads = []
    for F in (TF, crossent):
        z = torch.randn(6, 5, dtype=F64, generator=torch.Generator().manual_seed(0), requires_grad=True)
        with torch.autograd.graph.save_on_cpu():
            F.cross_entropy(z * 2.0, target, label_smoothing=0.1).backward()
        grads.append(z.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_loss_under_save_on_cpu_gives_torchs_gradients(reduction):
    grads = []
    for loss_fn in (TF.linear_cross_entropy, crossent.linear_cross_entropy):
        g = torch.Generator().manual_seed(0)
        h = torch.randn(6, 3, dtype=F64, generator=g, requires_grad=True)
        w = torch.randn(5, 3, dtype=F64, generator=g, requires_grad=True)
        with torch.autograd.graph.save_on_cpu():
            loss = loss_fn(h, w, target, reduction=reduction)
        loss.sum().backward()
        grads.append((h.grad, w.grad))
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b)
