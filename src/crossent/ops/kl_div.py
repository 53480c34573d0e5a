"""Kullback-Leibler divergence ``KL(target || model)`` with ``input`` the model's log-probabilities."""

from __future__ import annotations

from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._elementwise import grad_blocks, native_grads, native_loss, reduce_blocks
from crossent.ops._layout import accumulation_dtype


class KLDiv(torch.autograd.Function):
    """``l = t (log t - x)`` (``xlogy(t, t) - t x``), or ``exp(t) (t - x)`` with ``log_target``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, t: torch.Tensor, reduction: str, log_target: bool, native: bool
    ) -> torch.Tensor:
        acc = accumulation_dtype(x.dtype, t.dtype)
        shape = torch.broadcast_shapes(x.shape, t.shape)
        out_dtype = _result_dtype(x, t)
        ctx.reduction, ctx.log_target, ctx.native = reduction, log_target, native
        ctx.save_for_backward(x, t)
        if native:
            divisor = _divisor(reduction, x, shape)
            return native_loss("kl_div", reduction, out_dtype, divisor, x, t, log_target=log_target)

        def loss(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            xa, ta = x.to(acc), t.to(acc)
            if log_target:
                return ta.exp() * (ta - xa)
            # xlogy(0, 0) = 0 makes zero-probability classes contribute nothing
            return torch.xlogy(ta, ta).sub_(ta * xa)

        return reduce_blocks(shape, reduction, out_dtype, acc, loss, x, t, divisor=_divisor(reduction, x, shape))

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        x, t = ctx.saved_tensors
        acc = accumulation_dtype(x.dtype, t.dtype)
        shape = torch.broadcast_shapes(x.shape, t.shape)
        need_x, need_t = ctx.needs_input_grad[:2]
        g = grad_output.to(acc)
        if ctx.reduction in ("mean", "batchmean"):
            g = g / _divisor(ctx.reduction, x, shape)
        if ctx.native:
            upstream = grad_output if ctx.reduction == "none" else g
            grad_x, grad_t = native_grads("kl_div", upstream, (need_x, need_t), x, t, log_target=ctx.log_target)
            return grad_x, grad_t, None, None, None

        def grads(g: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor | None]:
            # d/dx l = -t (or -exp(t));  d/dt l = log t + 1 - x (or exp(t) (t - x + 1))
            xa, ta = x.to(acc), t.to(acc)
            gx = gt = None
            if need_x:
                gx = g * (ta.exp().neg_() if ctx.log_target else ta.neg())
            if need_t:
                # t / t is 1 for t > 0 and NaN at t = 0, where torch's gradient is NaN too
                gt = g * (ta.exp() * (ta - xa + 1) if ctx.log_target else ta.log() + ta / ta - xa)
            return [gx, gt]

        wanted = [(x.shape, x.dtype) if need_x else None, (t.shape, t.dtype) if need_t else None]
        grad_x, grad_t = grad_blocks(shape, wanted, grads, g, x, t)
        return grad_x, grad_t, None, None, None


def _divisor(reduction: str, x: torch.Tensor, shape: torch.Size) -> int:
    """'mean' divides by the broadcast element count; 'batchmean' by ``input.size(0)``, even when
    broadcasting made the output larger, and not at all for a 0-d input."""
    if reduction == "batchmean":
        return x.shape[0] if x.dim() > 0 else 1
    return shape.numel()


def _result_dtype(x: torch.Tensor, t: torch.Tensor) -> torch.dtype:
    """``torch.result_type`` for two floating tensors: a 0-d one does not promote a dimensioned one."""
    if (x.dim() == 0) != (t.dim() == 0):
        return t.dtype if x.dim() == 0 else x.dtype
    return torch.promote_types(x.dtype, t.dtype)
