"""Under torch.autocast every function follows torch's policy: the same output dtype, the same
accept/raise behaviour, gradients in the caller's dtypes, and a computation at least as precise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import crossent
from crossent import _autocast
from crossent.ops import _layout

F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16

x = torch.randn(8, 5)
y = torch.randint(0, 5, (8,))
w = torch.rand(5) + 0.1
p = x.softmax(1)
h = torch.randn(8, 4)
W = torch.randn(5, 4)

CASES: dict[str, Callable[[Any, torch.dtype, torch.dtype], torch.Tensor]] = {
    "cross_entropy": lambda F, d, a: F.cross_entropy(x.to(d), y),
    "cross_entropy weight smoothing": lambda F, d, a: F.cross_entropy(x.to(d), y, w, label_smoothing=0.1),
    "cross_entropy half weight": lambda F, d, a: F.cross_entropy(x.to(d), y, w.to(a)),
    "cross_entropy probabilities": lambda F, d, a: F.cross_entropy(x.to(d), p, w),
    "cross_entropy half probabilities": lambda F, d, a: F.cross_entropy(x.to(d), p.to(a)),
    "cross_entropy kdim": lambda F, d, a: F.cross_entropy(x.to(d).view(2, 4, 5).transpose(1, 2), y.view(2, 4) % 4),
    "nll_loss": lambda F, d, a: F.nll_loss(x.to(d), y, w),
    "log_softmax": lambda F, d, a: F.log_softmax(x.to(d), 1),
    "softmax": lambda F, d, a: F.softmax(x.to(d), 1),
    "log_softmax dtype": lambda F, d, a: F.log_softmax(x.to(d), 1, dtype=F16),
    "binary_cross_entropy": lambda F, d, a: F.binary_cross_entropy(x.to(d).sigmoid(), p),
    "binary_cross_entropy weight": lambda F, d, a: F.binary_cross_entropy(x.sigmoid().to(d), p.to(d), w.to(a)),
    "binary_cross_entropy_with_logits": lambda F, d, a: F.binary_cross_entropy_with_logits(x.to(d), p, w, pos_weight=w),
    "kl_div": lambda F, d, a: F.kl_div(x.to(d), p, reduction="batchmean"),
    "kl_div half target": lambda F, d, a: F.kl_div(x.to(d), p.to(a), reduction="batchmean"),
    "linear_cross_entropy": lambda F, d, a: F.linear_cross_entropy(h.to(d), W, y),
    "linear_cross_entropy weight smoothing": lambda F, d, a: F.linear_cross_entropy(
        h.to(d), W, y, weight=w, label_smoothing=0.1
    ),
    "linear_cross_entropy probabilities": lambda F, d, a: F.linear_cross_entropy(h.to(d), W, p),
    "linear_cross_entropy none": lambda F, d, a: F.linear_cross_entropy(h.to(d), W, y, reduction="none"),
}


def _run(module: Any, case: Callable[..., torch.Tensor], dtype: torch.dtype, autocast: torch.dtype) -> Any:
    with torch.autocast("cpu", dtype=autocast):
        try:
            return case(module, dtype, autocast)
        except Exception as exc:  # the class and message are what is compared
            return type(exc), str(exc)


@pytest.mark.parametrize("dtype", [F32, BF16, F16, F64], ids=str)
@pytest.mark.parametrize("autocast", [BF16, F16], ids=str)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cpu_autocast_matches_torch(case, autocast, dtype):
    theirs, ours = _run(TF, case, dtype, autocast), _run(crossent, case, dtype, autocast)
    if not isinstance(theirs, torch.Tensor):
        assert ours == theirs
        return
    assert isinstance(ours, torch.Tensor), ours
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    # torch rounds the logits of the linear layer to the autocast dtype; so does crossent's matmul
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-2, atol=1e-2)


def _logits_grad(module: Any, logits: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = logits.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=BF16):
        loss = module.cross_entropy(leaf, y, **kwargs)
    loss.backward()
    assert leaf.grad is not None
    return loss, leaf.grad


@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
def test_gradients_come_back_in_the_callers_dtype(dtype):
    logits = x.to(dtype)
    (_, ours), (_, theirs) = _logits_grad(crossent, logits, weight=w), _logits_grad(TF, logits, weight=w)
    assert ours.dtype == theirs.dtype == dtype
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-2, atol=1e-3)


def test_linear_cross_entropy_gradients_reach_float32_parameters():
    grads = []
    for module in (TF, crossent):
        hidden = h.detach().clone().requires_grad_()
        linear = W.detach().clone().requires_grad_()
        with torch.autocast("cpu", dtype=BF16):
            loss = module.linear_cross_entropy(hidden.to(BF16), linear, y)
        loss.backward()
        assert hidden.grad is not None and linear.grad is not None
        grads.append((loss, hidden.grad, linear.grad))
    for ours, theirs in zip(grads[1], grads[0], strict=True):
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours.double(), theirs.double(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("blocks", ["one-block", "many-blocks"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_weighted_smoothed_loss_is_as_precise_as_torch_under_bf16_autocast(loss, blocks, monkeypatch):
    """Every internal op runs in float32, on whichever thread runs a block."""
    if blocks == "many-blocks":
        monkeypatch.setattr(_layout, "BLOCK_ELEMENTS", 64)
    logits = torch.randn(512, 40) * 3
    target = torch.randint(0, 40, (512,))
    weight = torch.rand(40) + 0.5
    kwargs = {"label_smoothing": 0.1} if loss == "cross_entropy" else {}
    inputs = logits if loss == "cross_entropy" else logits.log_softmax(1)
    exact = getattr(TF, loss)(inputs.double(), target, weight.double(), **kwargs)
    errors = {}
    for name, module in (("torch", TF), ("crossent", crossent)):
        with torch.autocast("cpu", dtype=BF16):
            value = getattr(module, loss)(inputs, target, weight, **kwargs)
        assert value.dtype == F32
        errors[name] = abs(value.double() - exact).item()
    assert errors["crossent"] <= errors["torch"] + 1e-6, errors


def test_autocast_is_off_inside_the_implementation():
    seen = []

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(torch.is_autocast_enabled("cpu"))
        return torch.zeros(())

    wrapped = crossent._seam.public_op("cross_entropy")(spy)
    with torch.autocast("cpu", dtype=BF16):
        wrapped(x, y)
    wrapped(x, y)
    assert seen == [False, False]


def test_binary_cross_entropy_is_refused_under_cuda_autocast_as_in_torch():
    with pytest.raises(RuntimeError, match="unsafe to autocast"):
        _autocast.apply("binary_cross_entropy", "cuda", [x.sigmoid(), p], {})


def test_every_public_op_has_a_policy():
    from crossent import _dispatch

    assert set(_autocast.POLICIES) == set(_dispatch.OPS)
