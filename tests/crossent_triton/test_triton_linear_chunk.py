"""The per-chunk kernel of the fused linear cross-entropy against torch.nn.functional.cross_entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.crossent_triton.triton_env import triton_device

DEVICE = triton_device()
ct = pytest.importorskip("crossent.triton")
f64 = torch.float64


def expected(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, eps: float, scale: torch.Tensor):
    """(unreduced loss, lse, d(sum scale * loss)/dx) from torch."""
    x = x.detach().clone().requires_grad_()
    loss = F.cross_entropy(x, t, w, reduction="none", label_smoothing=eps)
    (grad,) = torch.autograd.grad((loss * scale).sum(), x)
    return loss.detach(), torch.logsumexp(x.detach(), 1), grad


@pytest.mark.parametrize("per_row_scale", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_chunk_loss_lse_and_gradient(layout: str, per_row_scale: bool, in_place: bool) -> None:
    x = torch.randn(5, 13, dtype=f64, device=DEVICE)
    t = torch.tensor([12, -100, 0, 3, 7], device=DEVICE)
    w = torch.rand(13, dtype=f64, device=DEVICE)
    scale = torch.rand(5, dtype=f64, device=DEVICE) if per_row_scale else torch.tensor(0.25, dtype=f64, device=DEVICE)
    loss_ref, lse_ref, grad_ref = expected(x, t, w, 0.1, scale)
    grad = x if in_place else torch.empty_like(x)
    loss, lse = ct.linear_cross_entropy_chunk(x, t, w, -100, 0.1, scale, grad)
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(lse[t != -100], lse_ref[t != -100])
    torch.testing.assert_close(grad, grad_ref)


def test_chunk_with_probability_targets_and_spatial_positions() -> None:
    x = torch.randn(2, 6, 3, dtype=f64, device=DEVICE)
    t = torch.rand(2, 6, 3, dtype=f64, device=DEVICE)
    scale = torch.tensor(1.0, dtype=f64, device=DEVICE)
    loss_ref, _, grad_ref = expected(x, t, None, 0.0, scale)
    grad = torch.empty_like(x)
    loss, lse = ct.linear_cross_entropy_chunk(x, t, None, -100, 0.0, scale, grad)
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(lse, torch.logsumexp(x, 1))
    torch.testing.assert_close(grad, grad_ref)


def test_chunk_without_gradient_reads_only() -> None:
    x = torch.randn(4, 9, dtype=torch.bfloat16, device=DEVICE)
    before = x.clone()
    loss, lse = ct.linear_cross_entropy_chunk(x, torch.tensor([0, 1, 2, 8], device=DEVICE), None, -100, 0.0)
    assert loss.dtype == torch.float32 and lse.shape == (4,)
    assert torch.equal(x, before)


def test_chunk_needs_a_scale_for_its_gradient() -> None:
    x = torch.randn(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="grad_scale"):
        ct.linear_cross_entropy_chunk(x, torch.tensor([0, 1], device=DEVICE), None, -100, 0.0, None, x)
