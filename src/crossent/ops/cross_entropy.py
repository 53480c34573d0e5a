"""Cross-entropy on logits: blocked forward and backward that never hold a logits-sized temporary.

Forward walks ``(N, C, S)`` logits in cache-sized blocks and keeps only the float32 (float64 for
float64 inputs) log-sum-exp per position. Backward recomputes ``softmax = exp(x - lse)`` block by
block and writes the gradient once, into a fresh buffer or, with ``inplace_backward=True``, into the
logits' own storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype, as_ncs, blocks


@dataclass(frozen=True)
class CrossEntropyOptions:
    reduction: str = "mean"  # 'none' | 'mean' | 'sum', already resolved
    ignore_index: int = -100
    label_smoothing: float = 0.0  # already clipped to [0, 1]
    inplace_backward: bool = False


def logsumexp_rows(
    x3: torch.Tensor, acc: torch.dtype, smoothing_weight: torch.Tensor | None = None, smoothing: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per position ``lse = log sum_c exp(x_c)``; with ``smoothing``, also ``sum_c w_c (lse - x_c)``.

    The smoothing sum is taken as ``log(sum exp(x - m)) * sum(w) - sum_c w_c (x_c - m)`` so that every
    term of the second sum has one sign (``x_c - m <= 0``): no cancellation, even for C = 256k.
    """
    n, c, s = x3.shape
    lse = torch.empty(n, s, dtype=acc, device=x3.device)
    smooth = torch.empty(n, s, dtype=acc, device=x3.device) if smoothing else None
    sum_w = smoothing_weight.sum() if smoothing_weight is not None else c
    for bn, bs in blocks(n, c, s):
        xb = x3[bn, :, bs].to(acc)
        m = xb.amax(1, keepdim=True)
        shifted = xb - m
        if smooth is not None:
            if smoothing_weight is None:
                weighted = shifted.sum(1)
            else:
                weighted = torch.einsum("bcs,c->bs", shifted, smoothing_weight)
        log_sumexp = shifted.exp_().sum(1).log_()
        lse[bn, bs] = m.squeeze(1) + log_sumexp
        if smooth is not None:
            smooth[bn, bs] = log_sumexp * sum_w - weighted
    return lse, smooth


def class_index_grad(
    x3: torch.Tensor,
    lse: torch.Tensor,
    target: torch.Tensor,
    p_scale: torch.Tensor,
    target_scale: torch.Tensor,
    smooth_scale: torch.Tensor | None,
    weight: torch.Tensor | None,
    out3: torch.Tensor,
) -> None:
    """Write ``p_scale * softmax(x) - target_scale * onehot(y) - smooth_scale * w`` into ``out3``.

    All scales are per position ``(N, S)``; ``out3`` may alias ``x3`` (in-place backward).
    """
    n, c, s = x3.shape
    acc = lse.dtype
    for bn, bs in blocks(n, c, s):
        xb = x3[bn, :, bs].to(acc)
        direct = out3.dtype == acc
        gb = out3[bn, :, bs] if direct else torch.empty_like(xb)
        torch.sub(xb, lse[bn, bs].unsqueeze(1), out=gb)
        gb.exp_().mul_(p_scale[bn, bs].unsqueeze(1))
        gb.scatter_add_(1, target[bn, bs].unsqueeze(1), target_scale[bn, bs].neg().unsqueeze(1))
        if smooth_scale is not None:
            if weight is None:
                gb.sub_(smooth_scale[bn, bs].unsqueeze(1))
            else:
                gb.addcmul_(smooth_scale[bn, bs].unsqueeze(1), weight.view(1, c, 1), value=-1)
        if not direct:
            out3[bn, :, bs].copy_(gb)


def _grad_buffer(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """The tensor the gradient is written into: the logits themselves when asked and possible."""
    if inplace and x.is_contiguous():
        return x
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


class ClassIndexCrossEntropy(torch.autograd.Function):
    """``l_n = m_n [(1 - eps) w_{y_n} (lse_n - x_{n,y_n}) + (eps / C) sum_c w_c (lse_n - x_{n,c})]``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, opts: CrossEntropyOptions
    ) -> torch.Tensor:
        x3 = as_ncs(x)
        n, c, s = x3.shape
        acc = accumulation_dtype(x.dtype)
        eps = opts.label_smoothing
        t = target.reshape(n, s).long()
        keep = t != opts.ignore_index
        t_safe = torch.where(keep, t, 0)
        w = weight.to(acc) if weight is not None else None

        lse, smooth = logsumexp_rows(x3, acc, w, smoothing=eps > 0)
        x_target = x3.gather(1, t_safe.unsqueeze(1)).squeeze(1).to(acc)
        w_target = w[t_safe] if w is not None else torch.ones((), dtype=acc, device=x.device)
        per_position = (lse - x_target) * w_target
        if smooth is not None:
            per_position = (1 - eps) * per_position + (eps / c) * smooth
        # where, not multiply: an ignored row of NaN logits still contributes exactly 0
        per_position = torch.where(keep, per_position, 0)
        total_weight = torch.where(keep, w_target, 0).sum()

        ctx.opts = opts
        ctx.save_for_backward(x, t_safe, keep, lse, w, total_weight)
        if opts.reduction == "none":
            shape = () if x.dim() == 1 else target.shape
            return per_position.to(x.dtype).reshape(shape)
        total = per_position.sum()
        if opts.reduction == "mean":
            total = total / total_weight
        return total.to(x.dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        # d/dx_c l_n = m_n G_n [(1-eps) w_y (p_c - [c=y]) + (eps/C)(p_c sum_k w_k - w_c)],  p = softmax(x)
        x, t_safe, keep, lse, w, total_weight = ctx.saved_tensors
        opts: CrossEntropyOptions = ctx.opts
        x3 = as_ncs(x)
        n, c, s = x3.shape
        acc = lse.dtype
        eps = opts.label_smoothing
        g = grad_output.to(acc)
        if opts.reduction == "none":
            g = g.reshape(n, s)
        elif opts.reduction == "mean":
            g = g / total_weight
        coef = torch.where(keep, g, 0)
        w_target = w[t_safe] if w is not None else torch.ones((), dtype=acc, device=x.device)
        target_scale = coef * ((1 - eps) * w_target)
        smooth_scale = coef * (eps / c) if eps > 0 else None
        sum_w = w.sum() if w is not None else c
        p_scale = target_scale + smooth_scale * sum_w if smooth_scale is not None else target_scale
        grad = _grad_buffer(x, opts.inplace_backward)
        class_index_grad(x3, lse, t_safe, p_scale, target_scale, smooth_scale, w, as_ncs(grad))
        return grad, None, None, None


class ProbabilityCrossEntropy(torch.autograd.Function):
    """``l_n = -sum_c w_c q_{n,c} log_softmax(x)_{n,c}`` with ``q = (1 - eps) t + eps / C``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, opts: CrossEntropyOptions
    ) -> torch.Tensor:
        x3, t3 = as_ncs(x), as_ncs(target)
        n, c, s = x3.shape
        dtypes = (x.dtype, target.dtype) + ((weight.dtype,) if weight is not None else ())
        acc = accumulation_dtype(*dtypes)
        out_dtype = x.dtype
        for dt in dtypes[1:]:
            out_dtype = torch.promote_types(out_dtype, dt)
        w = weight.to(acc).view(1, c, 1) if weight is not None else None
        eps = opts.label_smoothing

        lse = torch.empty(n, s, dtype=acc, device=x.device)
        # sum_c w_c q_c lp_c; its negation is the loss, so an empty sum is -0. as in torch
        neg_loss = torch.zeros(n, s, dtype=acc, device=x.device)
        if c > 0:
            for bn, bs in blocks(n, c, s):
                lp = x3[bn, :, bs].to(acc)
                m = lp.amax(1, keepdim=True)
                lp = lp - m
                block_lse = lp.exp().sum(1, keepdim=True).log_()
                lse[bn, bs] = (m + block_lse).squeeze(1)
                lp.sub_(block_lse)
                lp.mul_(_smoothed(t3[bn, :, bs].to(acc), eps, c))  # 0 * (-inf) = nan, as in torch
                if w is not None:
                    lp.mul_(w)
                neg_loss[bn, bs] = lp.sum(1)
        ctx.opts = opts
        ctx.out_dtype = out_dtype
        ctx.save_for_backward(x, target, weight, lse)
        if opts.reduction == "none":
            return neg_loss.neg().to(out_dtype).reshape(() if x.dim() == 1 else (n, *x.shape[2:]))
        total = neg_loss.sum().neg()
        if opts.reduction == "mean":
            total = total / _positions(n, c, s)
        return total.to(out_dtype)

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        # d/dx_c l = G (p_c sum_k w_k q_k - w_c q_c);  d/dt_c l = -(1-eps) w_c lp_c G;  d/dw_c l = -q_c lp_c G
        x, target, weight, lse = ctx.saved_tensors
        opts: CrossEntropyOptions = ctx.opts
        x3, t3 = as_ncs(x), as_ncs(target)
        n, c, s = x3.shape
        acc = lse.dtype
        eps = opts.label_smoothing
        g = grad_output.to(acc)
        if opts.reduction == "none":
            g = g.reshape(n, s)
        elif opts.reduction == "mean":
            g = g / _positions(n, c, s)
        g = g.expand(n, s)
        w = weight.to(acc).view(1, c, 1) if weight is not None else None
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        grad_x = _grad_buffer(x, opts.inplace_backward) if need_x else None
        grad_t = torch.empty_like(target) if need_t else None
        grad_w = torch.zeros(c, dtype=acc, device=x.device) if need_w else None
        grad_x3 = as_ncs(grad_x) if grad_x is not None else None
        grad_t3 = as_ncs(grad_t) if grad_t is not None else None
        for bn, bs in blocks(n, c, s):
            gb = g[bn, bs].unsqueeze(1)
            lp = x3[bn, :, bs].to(acc) - lse[bn, bs].unsqueeze(1)
            q = _smoothed(t3[bn, :, bs].to(acc), eps, c)
            wq = q * w if w is not None else q
            if grad_t3 is not None:
                scale = -(1 - eps) * gb
                grad_t3[bn, :, bs] = lp * (scale * w if w is not None else scale)
            if grad_w is not None:
                grad_w -= (q * lp * gb).sum((0, 2))
            if grad_x3 is not None:
                p = lp.exp_()
                grad_x3[bn, :, bs] = p.mul_(wq.sum(1, keepdim=True)).sub_(wq).mul_(gb)
        return (
            grad_x,
            grad_t,
            grad_w.to(weight.dtype) if grad_w is not None else None,
            None,
        )


def _positions(n: int, c: int, s: int) -> int:
    """torch's probability-target 'mean' divisor ``numel / C``: 0 (so 0/0 = nan) when there are no classes."""
    return n * s if c > 0 else 0


def _smoothed(t: torch.Tensor, eps: float, c: int) -> torch.Tensor:
    return t * (1 - eps) + eps / c if eps > 0 and c > 0 else t
