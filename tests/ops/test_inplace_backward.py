"""inplace_backward=True writes the gradient into the logits' storage, and only where that is safe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import crossent

F64 = torch.float64


@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3)], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gradient_equals_torch_and_lands_in_the_logits_storage(shape, reduction, eps, block_size):
    h = torch.randn(shape, dtype=F64, requires_grad=True)
    t = torch.randint(0, 5, (shape[0], *shape[2:]))
    t.view(-1)[0] = -100
    logits = h * 2.0  # non-leaf: mul's backward saves only the scalar
    loss = crossent.cross_entropy(logits, t, reduction=reduction, label_smoothing=eps, inplace_backward=True)
    g = torch.rand_like(loss)
    (grad_logits,) = torch.autograd.grad(loss, logits, g)

    ref_logits = (h.detach() * 2.0).requires_grad_()
    ref = TF.cross_entropy(ref_logits, t, reduction=reduction, label_smoothing=eps)
    (ref_grad,) = torch.autograd.grad(ref, ref_logits, g)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad_logits, ref_grad)
    assert grad_logits.data_ptr() == logits.data_ptr()


def test_autograd_version_counter_catches_another_saved_use_of_the_logits():
    h = torch.randn(4, 5, requires_grad=True)
    logits = h * 1.0
    other = (logits**2).sum()  # pow saves the logits for its backward
    loss = crossent.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace_backward=True) + other
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_no_grad_never_writes_into_the_logits():
    logits = torch.randn(4, 5)
    before = logits.clone()
    with torch.no_grad():
        crossent.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    assert torch.equal(logits, before)


def test_default_never_writes_into_the_logits():
    h = torch.randn(4, 5, requires_grad=True)
    logits = h * 1.0
    before = logits.detach().clone()
    crossent.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert torch.equal(logits.detach(), before)
