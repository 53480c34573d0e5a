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


VIEWS_OF_A_PARAMETER = {
    "view": lambda W: W.view(4, 5),
    "slice": lambda W: W[:],
    "reshape": lambda W: W.reshape(4, 5),
    "narrow": lambda W: W.narrow(0, 0, 4),
    "unsqueeze-index": lambda W: W.unsqueeze(0)[0],
    "as_strided": lambda W: W.as_strided((4, 5), (5, 1)),
    "view_as": lambda W: W.view_as(W),
    "flatten-unflatten": lambda W: W.flatten().view(4, 5),
    "itself": lambda W: W,
    "contiguous": lambda W: W.contiguous(),
    "detached leaf": lambda W: W.detach().requires_grad_(),
    "view of a detached leaf": lambda W: W.detach().requires_grad_().view(4, 5),
}
IMPLS = ["torch", "triton"]


def _impl_available(impl: str) -> None:
    if impl == "triton":
        from crossent import _dispatch

        try:
            _dispatch.resolve("cross_entropy", "triton", torch.device("cpu"))
        except RuntimeError as exc:
            pytest.skip(str(exc))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("make", VIEWS_OF_A_PARAMETER.values(), ids=VIEWS_OF_A_PARAMETER.keys())
def test_inplace_backward_never_overwrites_a_parameter_through_a_view(make, impl):
    _impl_available(impl)
    W = torch.nn.Parameter(torch.randn(4, 5))
    before = W.detach().clone()
    with pytest.raises(RuntimeError, match="would overwrite a (leaf tensor|view of a leaf tensor)"):
        crossent.cross_entropy(make(W), torch.tensor([0, 1, 2, 3]), inplace_backward=True, impl=impl).backward()
    assert torch.equal(W.detach(), before)


@pytest.mark.parametrize("fullgraph", [False, True])
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # Dynamo inspecting views
def test_inplace_backward_never_overwrites_a_parameter_under_compile(fullgraph):
    W = torch.nn.Parameter(torch.randn(4, 5))
    before = W.detach().clone()
    target = torch.tensor([0, 1, 2, 3])
    step = torch.compile(
        lambda W: crossent.cross_entropy(W.view(4, 5), target, inplace_backward=True),
        backend="aot_eager",
        fullgraph=fullgraph,
    )
    with pytest.raises(RuntimeError, match="would overwrite a view of a leaf tensor"):
        step(W).backward()
    assert torch.equal(W.detach(), before)


def test_inplace_backward_under_compile_uses_a_fresh_buffer_and_is_exact():
    h = torch.randn(4, 3, dtype=F64, requires_grad=True)
    W = torch.randn(5, 3, dtype=F64, requires_grad=True)
    target = torch.tensor([0, 1, 2, -100])
    step = torch.compile(
        lambda h, W: crossent.cross_entropy(h @ W.T, target, inplace_backward=True),
        backend="aot_eager",
        fullgraph=True,
    )
    step(h, W).backward()
    ref_h, ref_W = h.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    TF.cross_entropy(ref_h @ ref_W.T, target).backward()
    torch.testing.assert_close(h.grad, ref_h.grad)
    torch.testing.assert_close(W.grad, ref_W.grad)


@pytest.mark.parametrize("impl", IMPLS)
def test_inplace_backward_leaves_logits_alone_when_no_gradient_comes(impl):
    _impl_available(impl)
    target = torch.tensor([0, 1, 2, 3])
    plain = torch.randn(4, 5)
    before = plain.clone()
    crossent.cross_entropy(plain, target, inplace_backward=True, impl=impl)
    assert torch.equal(plain, before)
    tracked = torch.randn(4, 5, requires_grad=True) * 1.0
    before = tracked.detach().clone()
    with torch.no_grad():
        crossent.cross_entropy(tracked, target, inplace_backward=True, impl=impl)
    assert torch.equal(tracked.detach(), before)


def test_second_backward_after_inplace_backward_is_a_clear_error():
    logits = torch.randn(4, 5, requires_grad=True) * 1.0
    loss = crossent.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="overwrote the logits with their gradient"):
        loss.backward()
