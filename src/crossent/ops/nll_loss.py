"""Negative log-likelihood on log-probabilities: a gather forward and a scatter backward.

The targets are read by the cross-entropy engine's ``ClassIndex`` (kept mask, in-range ids, the
target weights and the ``'mean'`` divisor), so NLL and cross-entropy share one reading of them.
"""

from __future__ import annotations

from typing import Any

import torch

from crossent._engine import ClassIndex
from crossent._reduction import Reduction, reduce, upstream
from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype, as_ncs, as_rows, class_dim, output_shape


def _kind(z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int) -> ClassIndex:
    z3 = as_ncs(z)
    n, c, s = z3.shape
    return ClassIndex.build(target.reshape(n, s), weight, ignore_index, 0.0, c, accumulation_dtype(z.dtype))


class NLLLoss(torch.autograd.Function):
    """``l_n = -w_{y_n} z_{n, y_n} m_n``, where ``m_n = [y_n != ignore_index]``."""

    @staticmethod
    def forward(
        ctx: Any,
        z: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        reduction: Reduction,
        ignore_index: int,
        native: bool,
    ) -> torch.Tensor:
        ctx.reduction, ctx.ignore_index, ctx.native = reduction, ignore_index, native
        if native:
            return _native_forward(ctx, z, target, weight, reduction, ignore_index)
        kind = _kind(z, target, weight, ignore_index)
        z3 = as_ncs(z)
        picked = z3.gather(1, kind.local.unsqueeze(1)).squeeze(1).to(kind.acc) if z3.shape[1] > 0 else kind.local * 0
        if kind.target_weight is not None:
            picked = picked * kind.target_weight
        # where, not multiply: ignored positions are exactly 0 even when z is -inf or NaN there
        loss = reduce(torch.where(kind.keep, -picked, 0), reduction, kind.mean_divisor())
        ctx.save_for_backward(z, target, weight)
        return (loss.reshape(output_shape(z)) if reduction == "none" else loss).to(z.dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:
        # d/dz_{n,c} l = -w_c [c = y_n] m_n G_n: one nonzero per kept position
        if ctx.native:
            return _native_backward(ctx, grad_output)
        z, target, weight = ctx.saved_tensors
        kind = _kind(z, target, weight, ctx.ignore_index)
        g = upstream(grad_output.to(kind.acc), ctx.reduction, kind.mean_divisor(), tuple(kind.keep.shape))
        picked = -g if kind.target_weight is None else -g * kind.target_weight
        grad = torch.zeros(z.shape, dtype=grad_output.dtype, device=z.device)
        if z.numel() > 0:
            # one value per position, put by flat index: scatter_ would copy half-precision output to float32
            n, c, s = as_ncs(grad).shape
            rows = torch.arange(n, device=z.device).unsqueeze(1) * (c * s) + torch.arange(s, device=z.device)
            grad.view(-1).index_put_(
                ((rows + kind.local * s).reshape(-1),), torch.where(kind.keep, picked, 0).to(grad.dtype).reshape(-1)
            )
        return grad, None, None, None, None, None


def _native_rows(z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C,)``, ``(N, C)`` or ``(N, C, 1, ..)`` log-probabilities as rows ``(N, C)``, and int64 targets ``(N,)``."""
    z2 = as_rows(z, class_dim(z))
    return z2, target.reshape(z2.shape[0]).long()


def _native_forward(
    ctx: Any, z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, reduction: Reduction, ignore: int
) -> torch.Tensor:
    """The forward on the native kernels: one read of each target's log-probability."""
    from crossent.native import kernels

    loss, total_weight = kernels.nll_loss_rows(*_native_rows(z, target), weight, ignore)
    ctx.save_for_backward(z, target, weight, total_weight)
    loss = reduce(loss, reduction, total_weight)
    return (loss.reshape(output_shape(z)) if reduction == "none" else loss).to(z.dtype)


def _native_backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:
    """The backward on the native kernels: zero rows with one value each, written once."""
    from crossent.native import kernels

    z, target, weight, total_weight = ctx.saved_tensors
    z2, t = _native_rows(z, target)
    coef = upstream(grad_output.to(torch.float32), ctx.reduction, total_weight, (z2.shape[0],))
    grad = kernels.nll_loss_rows_backward(z2, t, weight, ctx.ignore_index, coef)
    return grad.view(z.shape), None, None, None, None, None
