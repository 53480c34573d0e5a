"""The sigmoid focal loss of RetinaNet on logits, element by element, in cache-sized blocks.

With ``s = sigmoid(x)``, ``s' = sigmoid(-x) = 1 - s`` and ``q = 1 - p_t = t s' + (1 - t) s``::

    l = a_t * q^gamma * ce,   ce = (1 - t) x - (1 + (pw - 1) t) log sigmoid(x),   a_t = a t + (1 - a)(1 - t)

``q`` is a sum of two sigmoids, never a difference, so it keeps its relative accuracy when it is tiny
(a confident, correct prediction), and ``ce`` is BCE-with-logits' stable form.
"""

from __future__ import annotations

from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._elementwise import grad_blocks, reduce_blocks
from crossent.ops._layout import accumulation_dtype, result_dtype
from crossent.ops.binary import _upstream, log_sigmoid


def _parts(
    x: torch.Tensor, t: torch.Tensor, pw: torch.Tensor | None, acc: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, t, log sigmoid(x), ce, s, s')`` in ``acc``; ce exactly as BCE-with-logits computes it."""
    xa, ta = x.to(acc), t.to(acc)
    log_sig = log_sigmoid(xa)
    scaled = log_sig if pw is None else log_sig * (pw.to(acc) - 1).mul_(ta).add_(1)
    ce = (1 - ta).mul_(xa).sub_(scaled)
    return xa, ta, log_sig, ce, torch.sigmoid(xa), torch.sigmoid(-xa)


class SigmoidFocalLoss(torch.autograd.Function):
    """``l = a_t (1 - p_t)^gamma ce``; ``alpha < 0`` drops ``a_t``; result in the promoted dtype of x and t."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        t: torch.Tensor,
        pos_weight: torch.Tensor | None,
        gamma: float,
        alpha: float,
        reduction: str,
    ) -> torch.Tensor:
        ctx.gamma, ctx.alpha, ctx.reduction = gamma, alpha, reduction
        ctx.save_for_backward(x, t, pos_weight)
        acc = accumulation_dtype(x.dtype, t.dtype)

        def loss(x: torch.Tensor, t: torch.Tensor, pw: torch.Tensor | None) -> torch.Tensor:
            _, ta, _, ce, s, sn = _parts(x, t, pw, acc)
            out = ce if gamma == 0 else ce.mul_(torch.pow((sn * ta).add_(s * (1 - ta)), gamma))
            return out if alpha < 0 else out.mul_((2 * alpha - 1) * ta + (1 - alpha))

        return reduce_blocks(x.shape, reduction, result_dtype(x.dtype, t.dtype), acc, loss, x, t, pos_weight)

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None]:
        x, t, pos_weight = ctx.saved_tensors
        gamma, alpha = ctx.gamma, ctx.alpha
        acc = accumulation_dtype(x.dtype, t.dtype)
        need_x, need_t = ctx.needs_input_grad[:2]

        def grads(
            g: torch.Tensor, x: torch.Tensor, t: torch.Tensor, pw: torch.Tensor | None
        ) -> list[torch.Tensor | None]:
            xa, ta, log_sig, ce, s, sn = _parts(x, t, pw, acc)
            q = (sn * ta).add_(s * (1 - ta))
            f = torch.pow(q, gamma)  # 1 exactly for gamma = 0, even where q = 0
            a_t = None if alpha < 0 else (2 * alpha - 1) * ta + (1 - alpha)
            ga = g if a_t is None else g * a_t
            gx = gt = None
            if need_x:
                # d/dx l = a_t [gamma q^gamma (1 - 2t) (s s' / q) ce + q^gamma ((1 + (pw - 1) t) s - pw t)]
                d_ce = s - ta if pw is None else (pw.to(acc) - 1).mul(ta).add_(1).mul_(s).sub_(pw.to(acc) * ta)
                d = f * d_ce
                if gamma != 0:
                    # s s' / q <= max(s, s') is bounded; where q = 0 so is s s', and q^gamma = 0 takes the term away
                    ratio = torch.where(q > 0, s * sn / q, 0.0)
                    d = d.add_(gamma * f * (1 - 2 * ta) * ratio * ce)
                gx = ga * d
            if need_t:
                # d/dt l = a_t [gamma q^gamma (s' - s) (ce / q) + q^gamma (log sigmoid(-x) - pw log sigmoid(x))]
                #          + (2a - 1) q^gamma ce        (d/dt ce = -x without pw; d/dt q = s' - s)
                d_ce = xa.neg() if pw is None else log_sigmoid(-xa).sub_(pw.to(acc) * log_sig)
                d = f * d_ce
                if gamma != 0:
                    # ce / q stays finite as q -> 0: q = 0 needs a saturated sigmoid, where ce -> 0 like q
                    d = d.add_(gamma * f * (sn - s) * torch.where(q > 0, ce / q, 0.0))
                gt = ga * d if a_t is None else ga * d + g * (2 * alpha - 1) * f * ce
            return [gx, gt]

        g = _upstream(grad_output, ctx.reduction, x.numel(), acc)
        wanted = [(x.shape, x.dtype) if need_x else None, (t.shape, t.dtype) if need_t else None]
        grad_x, grad_t = grad_blocks(x.shape, wanted, grads, g, x, t, pos_weight)
        return grad_x, grad_t, None, None, None, None
