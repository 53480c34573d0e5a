"""Cross-entropy on logits: blocked forward and backward that never hold a logits-sized temporary.

Forward walks ``(N, C, S)`` logits in cache-sized blocks and keeps the float32 (float64 for float64
inputs) log-sum-exp per position, as its two parts ``max`` and ``log_sum`` (see ``RowStats``). When a
gradient is expected, the forward also writes it (for an upstream gradient of 1) from the block's own
exponentials, and the backward only rescales it. Otherwise (``inplace_backward=True``, while
``torch.compile`` traces) the backward recomputes ``softmax = exp(x - max) / exp(log_sum)`` block by
block and writes the gradient once, into a fresh buffer or into the logits' own storage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch

from crossent._reduction import reduce
from crossent.ops import _memory
from crossent.ops._autograd import first_order
from crossent.ops._layout import Block, accumulation_dtype, as_ncs, blocks, class_dim
from crossent.ops._parallel import for_each_block


@dataclass(frozen=True)
class CrossEntropyOptions:
    reduction: str = "mean"  # 'none' | 'mean' | 'sum', already resolved
    ignore_index: int = -100
    label_smoothing: float = 0.0  # already clipped to [0, 1]
    inplace_backward: bool = False
    # a gradient will be asked for (grad mode on at the call, input requires grad): the forward forms it
    gradient_expected: bool = False


class RowStats(NamedTuple):
    """Per-position log-sum-exp kept as ``max + log_sum`` (``log_sum = log sum_c exp(x_c - max)``).

    Keeping the two parts apart makes ``x - max`` exact (Sterbenz) and leaves only the small ``log_sum``
    rounded: a single ``lse = max + log_sum`` would carry an error of ``ulp(max)`` into every log-prob,
    e.g. 6e-5 for float32 logits near 1000, against torch's ``(x - max) - log_sum``.
    """

    max: torch.Tensor  # (N, S)
    log_sum: torch.Tensor  # (N, S)
    smooth: torch.Tensor | None  # (N, S): sum_c w_c (lse - x_c), when label smoothing is on


@dataclass(frozen=True)
class GradientSpec:
    """``d loss / d logits = p_scale * softmax(x) - target_scale * onehot(y) - smooth_scale * w``.

    Scales are per position ``(N, S)``; the gradient is written into ``out3`` (which may alias the
    logits for an in-place backward).
    """

    out3: torch.Tensor
    target: torch.Tensor
    p_scale: torch.Tensor
    target_scale: torch.Tensor
    smooth_scale: torch.Tensor | None
    weight: torch.Tensor | None


def _finish_grad_block(
    gb: torch.Tensor, block: Block, spec: GradientSpec, exp_scale: torch.Tensor, in_place: bool
) -> None:
    """Turn ``gb = exp(x - max)`` into the gradient block; copy it into ``spec.out3`` unless it is already there."""
    bn, bs = block
    gb.mul_(exp_scale.unsqueeze(1))
    gb.scatter_add_(1, spec.target[bn, bs].unsqueeze(1), spec.target_scale[bn, bs].neg().unsqueeze(1))
    if spec.smooth_scale is not None:
        if spec.weight is None:
            gb.sub_(spec.smooth_scale[bn, bs].unsqueeze(1))
        else:
            gb.addcmul_(spec.smooth_scale[bn, bs].unsqueeze(1), spec.weight.view(1, -1, 1), value=-1)
    if not in_place:
        spec.out3[bn, :, bs] = gb


def row_stats(
    x3: torch.Tensor,
    acc: torch.dtype,
    smoothing_weight: torch.Tensor | None = None,
    smoothing: bool = False,
    grad: GradientSpec | None = None,
) -> RowStats:
    """Max and log-sum-exp of each position of ``(N, C, S)`` logits, block by block.

    With ``smoothing``, also ``sum_c w_c (lse - x_c) = log_sum * sum(w) - sum_c w_c (x_c - max)``, where
    every term of the last sum has one sign (``x_c - max <= 0``): no cancellation, even for C = 256k.
    With ``grad``, the gradient is formed from the same block's exponentials while they are in cache,
    saving the backward's second ``exp`` pass.
    """
    n, c, s = x3.shape
    if c == 0:  # log of an empty sum; no smoothing term without classes
        zeros = torch.zeros(n, s, dtype=acc, device=x3.device)
        return RowStats(zeros, torch.full_like(zeros, -math.inf), zeros if smoothing else None)
    row_max = torch.empty(n, s, dtype=acc, device=x3.device)
    log_sum = torch.empty(n, s, dtype=acc, device=x3.device)
    smooth = torch.empty(n, s, dtype=acc, device=x3.device) if smoothing else None
    sum_w = smoothing_weight.sum() if smoothing_weight is not None else c
    grad_in_place = grad is not None and grad.out3.dtype == acc

    def stats_of(block: Block) -> None:
        bn, bs = block
        xb = x3[bn, :, bs].to(acc)
        m = xb.amax(1, keepdim=True)
        shifted = torch.sub(xb, m, out=grad.out3[bn, :, bs]) if grad is not None and grad_in_place else xb - m
        if smooth is not None:
            if smoothing_weight is None:
                weighted = shifted.sum(1)
            else:
                weighted = torch.einsum("bcs,c->bs", shifted, smoothing_weight)
        sum_exp = shifted.exp_().sum(1)
        block_log_sum = sum_exp.log()
        row_max[bn, bs] = m.squeeze(1)
        log_sum[bn, bs] = block_log_sum
        if smooth is not None:
            smooth[bn, bs] = block_log_sum * sum_w - weighted
        if grad is not None:
            _finish_grad_block(shifted, block, grad, grad.p_scale[bn, bs] / sum_exp, grad_in_place)

    for_each_block(list(blocks(n, c, s)), stats_of, x3.device)
    return RowStats(row_max, log_sum, smooth)


def class_index_grad(x3: torch.Tensor, stats: RowStats, grad: GradientSpec) -> None:
    """Write the gradient ``grad`` describes into ``grad.out3``, recomputing ``exp(x - max)`` block by block."""
    n, c, s = x3.shape
    acc = stats.max.dtype
    # softmax = exp(x - max) / exp(log_sum): fold the division into the per-position scale
    exp_scale = grad.p_scale * stats.log_sum.neg().exp()
    direct = grad.out3.dtype == acc

    def grad_of(block: Block) -> None:
        bn, bs = block
        xb = x3[bn, :, bs].to(acc)
        gb = grad.out3[bn, :, bs] if direct else torch.empty_like(xb)
        torch.sub(xb, stats.max[bn, bs].unsqueeze(1), out=gb).exp_()
        _finish_grad_block(gb, block, grad, exp_scale[bn, bs], direct)

    for_each_block(list(blocks(n, c, s)), grad_of, x3.device)


def _grad_buffer(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """The tensor the gradient is written into: the logits themselves when asked and possible."""
    if inplace and x.is_contiguous():
        return x
    return _memory.empty(x.shape, x.dtype, x.device)


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
        w_target = w[t_safe] if w is not None and c > 0 else torch.ones((), dtype=acc, device=x.device)
        total_weight = torch.where(keep, w_target, 0).sum()
        # with a gradient to come, form it now from the forward's own exponentials (for upstream
        # gradient 1; the backward rescales it): one exp pass instead of two, and no second read of x
        precompute = opts.gradient_expected and not opts.inplace_backward and c > 0
        precompute = precompute and not torch.compiler.is_compiling()
        grad = _memory.empty(x.shape, x.dtype, x.device) if precompute else None
        spec = _unit_gradient_spec(grad, t_safe, keep, w, total_weight, opts, c) if grad is not None else None

        stats = row_stats(x3, acc, w, smoothing=eps > 0, grad=spec)
        per_position = class_index_loss(x3, stats, t_safe, keep, w_target, eps)

        ctx.opts = opts
        ctx.precomputed, ctx.precomputed_grad = precompute, grad
        ctx.overwrote_logits = False
        ctx.save_for_backward(t_safe, keep, stats.max, stats.log_sum, w, total_weight, *(() if precompute else (x,)))
        if precompute:
            # the first backward needs only the gradient; only a retained graph's second backward reads
            # the logits again. Held unsaved with their version, so that (as with torch, which keeps
            # the log-probabilities) editing the logits in place after the forward breaks nothing else
            ctx.logits, ctx.logits_version = x, x._version
        loss = reduce(per_position, opts.reduction, total_weight)
        if opts.reduction == "none":
            loss = loss.reshape(() if x.dim() == 1 else target.shape)
        return loss.to(x.dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        # d/dx_c l_n = m_n G_n [(1-eps) w_y (p_c - [c=y]) + (eps/C)(p_c sum_k w_k - w_c)],  p = softmax(x)
        if ctx.overwrote_logits:
            raise RuntimeError(
                "cross_entropy(inplace_backward=True) overwrote the logits with their gradient; "
                "backward through this graph a second time needs inplace_backward=False"
            )
        t_safe, keep, row_max, log_sum, w, total_weight, *saved_logits = ctx.saved_tensors
        opts: CrossEntropyOptions = ctx.opts
        if ctx.precomputed:
            grad = ctx.precomputed_grad
            ctx.precomputed_grad = None
            if grad is None:
                # a retained graph's second backward: autograd already owns the first buffer, so
                # redo the forward's unit gradient exactly (same kernel, same bits) in a new one
                x = ctx.logits
                if x._version != ctx.logits_version:
                    raise RuntimeError(
                        "cross_entropy: the logits were modified in place after the forward; a second backward "
                        "through the retained graph recomputes the gradient from them and needs them unchanged"
                    )
                x3 = as_ncs(x)
                grad = _memory.empty(x.shape, x.dtype, x.device)
                spec = _unit_gradient_spec(grad, t_safe, keep, w, total_weight, opts, x3.shape[1])
                row_stats(x3, row_max.dtype, w, grad=spec)
            # the gradient is linear in the upstream gradient
            g = grad_output.to(grad.dtype)
            return grad.mul_(g.unsqueeze(class_dim(grad)) if opts.reduction == "none" else g), None, None, None
        (x,) = saved_logits
        x3 = as_ncs(x)
        n, c, s = x3.shape
        g = grad_output.to(row_max.dtype)
        if opts.reduction == "none":
            g = g.reshape(n, s)
        elif opts.reduction == "mean":
            g = g / total_weight
        grad = _grad_buffer(x, opts.inplace_backward)
        ctx.overwrote_logits = grad is x
        if c > 0:
            spec = gradient_spec(as_ncs(grad), t_safe, torch.where(keep, g, 0), w, opts.label_smoothing, c)
            class_index_grad(x3, RowStats(row_max, log_sum, None), spec)
        return grad, None, None, None


def _unit_gradient_spec(
    grad: torch.Tensor,
    t_safe: torch.Tensor,
    keep: torch.Tensor,
    w: torch.Tensor | None,
    total_weight: torch.Tensor,
    opts: CrossEntropyOptions,
    c: int,
) -> GradientSpec:
    """The gradient for an upstream gradient of 1, to be written into ``grad``."""
    unit = torch.ones((), dtype=total_weight.dtype, device=grad.device)
    g = unit / total_weight if opts.reduction == "mean" else unit
    return gradient_spec(as_ncs(grad), t_safe, torch.where(keep, g, 0), w, opts.label_smoothing, c)


def class_index_loss(
    x3: torch.Tensor,
    stats: RowStats,
    t_safe: torch.Tensor,
    keep: torch.Tensor,
    w_target: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """Per-position ``m_n [(1 - eps) w_y (lse - x_y) + (eps / C) sum_c w_c (lse - x_c)]`` from ``stats``."""
    c = x3.shape[1]
    x_target = x3.gather(1, t_safe.unsqueeze(1)).squeeze(1).to(stats.max.dtype) if c > 0 else stats.max
    # lse - x_y = (max - x_y) + log_sum, the order that keeps huge logits exact
    nll = (stats.max - x_target).add_(stats.log_sum)
    # where, not multiply: an ignored row of NaN logits still contributes exactly 0
    loss = torch.where(keep, nll if w_target is None else nll * w_target, 0)
    if stats.smooth is not None:
        # eps / C is NaN without classes, as torch's 0/0 there
        loss = (1 - eps) * loss + (eps / c if c else math.nan) * torch.where(keep, stats.smooth, 0)
    return loss


def gradient_spec(
    out3: torch.Tensor,
    t_safe: torch.Tensor,
    coef: torch.Tensor,
    w: torch.Tensor | None,
    eps: float,
    c: int,
) -> GradientSpec:
    """The per-position scales of ``d l / d x`` for ``coef``, the upstream gradient already zeroed at
    ignored positions (per position or scalar)."""
    w_target = w[t_safe] if w is not None else 1.0
    target_scale = coef * ((1 - eps) * w_target)
    smooth_scale = coef * (eps / c) if eps > 0 else None
    p_scale = target_scale
    if smooth_scale is not None:
        p_scale = target_scale + smooth_scale * (w.sum() if w is not None else c)
    return GradientSpec(out3, t_safe, p_scale, target_scale, smooth_scale, w)


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

        row_max = torch.empty(n, s, dtype=acc, device=x.device)
        log_sum = torch.empty(n, s, dtype=acc, device=x.device)
        # sum_c w_c q_c lp_c; its negation is the loss, so an empty sum is -0. as in torch
        neg_loss = torch.zeros(n, s, dtype=acc, device=x.device)

        def loss_of(block: Block) -> None:
            bn, bs = block
            lp = x3[bn, :, bs].to(acc)
            m = lp.amax(1, keepdim=True)
            lp = lp - m
            block_log_sum = lp.exp().sum(1, keepdim=True).log_()
            row_max[bn, bs] = m.squeeze(1)
            log_sum[bn, bs] = block_log_sum.squeeze(1)
            lp.sub_(block_log_sum)
            lp.mul_(_smoothed(t3[bn, :, bs].to(acc), eps, c))  # 0 * (-inf) = nan, as in torch
            if w is not None:
                lp.mul_(w)
            neg_loss[bn, bs] = lp.sum(1)

        if c > 0:
            for_each_block(list(blocks(n, c, s)), loss_of, x.device)
        ctx.opts = opts
        ctx.out_dtype = out_dtype
        ctx.save_for_backward(x, target, weight, row_max, log_sum)
        loss = reduce(neg_loss, opts.reduction, _positions(n, c, s)).neg()
        if opts.reduction == "none":
            loss = loss.reshape(() if x.dim() == 1 else (n, *x.shape[2:]))
        return loss.to(out_dtype)

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        # d/dx_c l = G (p_c sum_k w_k q_k - w_c q_c);  d/dt_c l = -(1-eps) w_c lp_c G;  d/dw_c l = -q_c lp_c G
        x, target, weight, row_max, log_sum = ctx.saved_tensors
        opts: CrossEntropyOptions = ctx.opts
        x3, t3 = as_ncs(x), as_ncs(target)
        n, c, s = x3.shape
        acc = row_max.dtype
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
        grad_t = _memory.empty(target.shape, target.dtype, target.device) if need_t else None
        grad_x3 = as_ncs(grad_x) if grad_x is not None else None
        grad_t3 = as_ncs(grad_t) if grad_t is not None else None

        def grads_of(block: Block) -> torch.Tensor | None:
            bn, bs = block
            gb = g[bn, bs].unsqueeze(1)
            lp = (x3[bn, :, bs].to(acc) - row_max[bn, bs].unsqueeze(1)).sub_(log_sum[bn, bs].unsqueeze(1))
            q = _smoothed(t3[bn, :, bs].to(acc), eps, c)
            wq = q * w if w is not None else q
            if grad_t3 is not None:
                scale = -(1 - eps) * gb
                grad_t3[bn, :, bs] = lp * (scale * w if w is not None else scale)
            partial_grad_w = (q * lp * gb).sum((0, 2)).neg_() if need_w else None
            if grad_x3 is not None:
                p = lp.exp_()
                grad_x3[bn, :, bs] = p.mul_(wq.sum(1, keepdim=True)).sub_(wq).mul_(gb)
            return partial_grad_w

        partials = for_each_block(list(blocks(n, c, s)), grads_of, x.device)
        grad_w = None
        if need_w:
            # per-block partial sums added in block order: the same result on any number of threads
            grad_w = torch.zeros(c, dtype=acc, device=x.device)
            for partial in partials:
                grad_w += cast(torch.Tensor, partial)
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
