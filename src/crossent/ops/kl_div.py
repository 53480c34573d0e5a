"""Kullback-Leibler divergence ``KL(target || model)`` with ``input`` the model's log-probabilities."""

from __future__ import annotations

from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype


class KLDiv(torch.autograd.Function):
    """``l = t (log t - x)`` (``xlogy(t, t) - t x``), or ``exp(t) (t - x)`` with ``log_target``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, t: torch.Tensor, reduction: str, log_target: bool
    ) -> torch.Tensor:
        out_dtype = torch.promote_types(x.dtype, t.dtype)
        acc = accumulation_dtype(x.dtype, t.dtype)
        xa, ta = x.to(acc), t.to(acc)
        # xlogy(0, 0) = 0 makes zero-probability classes contribute nothing
        loss = ta.exp() * (ta - xa) if log_target else torch.xlogy(ta, ta) - ta * xa
        ctx.reduction, ctx.log_target = reduction, log_target
        ctx.batch = x.shape[0] if x.dim() > 0 else 1
        ctx.save_for_backward(x, t)
        if reduction == "none":
            return loss.to(out_dtype)
        total = loss.sum()
        if reduction == "mean":
            total = total / loss.numel()
        elif reduction == "batchmean":
            total = total / ctx.batch
        return total.to(out_dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        # d/dx l = -t (or -exp(t));  d/dt l = log t + 1 - x (or exp(t) (t - x + 1))
        x, t = ctx.saved_tensors
        acc = accumulation_dtype(x.dtype, t.dtype)
        xa, ta = x.to(acc), t.to(acc)
        g = grad_output.to(acc)
        if ctx.reduction == "mean":
            g = g / torch.broadcast_shapes(x.shape, t.shape).numel()
        elif ctx.reduction == "batchmean":
            g = g / ctx.batch
        shape = torch.broadcast_shapes(x.shape, t.shape)
        grad_x = grad_t = None
        if ctx.needs_input_grad[0]:
            d = ta.exp().neg_() if ctx.log_target else ta.neg()
            grad_x = (g * d).expand(shape).sum_to_size(x.shape).to(x.dtype)
        if ctx.needs_input_grad[1]:
            # t / t is 1 for t > 0 and NaN at t = 0, where torch's gradient is NaN too
            d = ta.exp() * (ta - xa + 1) if ctx.log_target else ta.log() + ta / ta - xa
            grad_t = (g * d).expand(shape).sum_to_size(t.shape).to(t.dtype)
        return grad_x, grad_t, None, None
