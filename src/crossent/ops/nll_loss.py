"""Negative log-likelihood on log-probabilities: a gather forward and a scatter backward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from crossent._reduction import reduce
from crossent.ops import _memory
from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype, class_dim


@dataclass(frozen=True)
class NLLOptions:
    reduction: str = "mean"  # 'none' | 'mean' | 'sum', already resolved
    ignore_index: int = -100


def _targets(x: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept mask and in-range class ids; an unbatched ``(C,)`` input takes a ``()`` or ``(1,)`` target."""
    t = target.long()
    if x.dim() == 1:
        t = t.reshape(())
    keep = t != ignore_index
    return keep, torch.where(keep, t, 0)


class NLLLoss(torch.autograd.Function):
    """``l_n = -w_{y_n} z_{n, y_n} m_n``, where ``m_n = [y_n != ignore_index]``."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, opts: NLLOptions
    ) -> torch.Tensor:
        cd = class_dim(z)
        acc = accumulation_dtype(z.dtype)
        keep, t_safe = _targets(z, target, opts.ignore_index)
        has_classes = z.shape[cd] > 0
        picked = (
            z.gather(cd, t_safe.unsqueeze(cd)).squeeze(cd).to(acc)
            if has_classes
            else torch.zeros(t_safe.shape, dtype=acc, device=z.device)
        )
        w_target = weight.to(acc)[t_safe] if weight is not None else torch.ones((), dtype=acc, device=z.device)
        # where, not multiply: ignored positions are exactly 0 even when z is -inf or NaN there
        per_position = torch.where(keep, -picked * w_target, 0)
        total_weight = torch.where(keep, w_target, 0).sum()
        ctx.opts = opts
        ctx.shape = z.shape
        ctx.save_for_backward(t_safe, keep, w_target, total_weight)
        return reduce(per_position, opts.reduction, total_weight).to(z.dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        # d/dz_{n,c} l = -w_c [c = y_n] m_n G_n: one nonzero per kept position
        t_safe, keep, w_target, total_weight = ctx.saved_tensors
        opts: NLLOptions = ctx.opts
        g = grad_output.to(w_target.dtype)
        if opts.reduction == "mean":
            g = g / total_weight
        picked_grad = torch.where(keep, -g * w_target, 0)
        cd = 0 if len(ctx.shape) == 1 else 1
        grad = _memory.zeros(ctx.shape, grad_output.dtype, grad_output.device)
        if ctx.shape[cd] > 0:
            grad.scatter_(cd, t_safe.unsqueeze(cd), picked_grad.to(grad.dtype).unsqueeze(cd))
        return grad, None, None, None
