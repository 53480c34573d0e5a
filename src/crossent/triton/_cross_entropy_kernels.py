"""Triton cross-entropy kernels and launchers (class-index and probability targets, every option).

Layout: the logits are viewed as (N, C, S) (S = product of the K extra dims, 1 for 2-D input),
row r = n * S + s holds the C logits of one position, read with a class stride of S.

Kernels:
    _ce_rows_kernel      one program per (row, segment): online log-sum-exp over its columns. If a
                         row fits on chip (one block) it also writes the gradient from registers,
                         so forward + backward reads the logits once and writes the gradient once.
    _ce_combine_kernel   two-stage reduction for split rows: merges the segment partials.
    _ce_grad_kernel      gradient from the saved log-sum-exp (streamed rows, reduction 'none').

Gradient identities (p = softmax(x), a_c = the per-class coefficient of the target distribution):
    index:  dx_c = G m_n [(1 - eps) w_y (p_c - [c = y]) + (eps / C)(p_c sum_k w_k - w_c)]
    prob:   dx_c = G_n (p_c sum_k a_k - a_c),  a_c = w_c q_c,  q = (1 - eps) t + eps / C
    target: dt_c = -(1 - eps) w_c (x_c - lse) G_n

lse is kept as (r, log s) with r the row max: x_c - lse = (x_c - r) - log s rounds like torch.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.triton._common import (
    block_stats,
    finite_ref,
    launch,
    merge_stats,
    num_warps_for,
    split_rows,
    tl_dtype,
    tuning,
)

# ---------------------------------------------------------------------------------------------
# Device code.
# ---------------------------------------------------------------------------------------------


@triton.jit
def _target_coefficients(t_row, t_sc, w_ptr, eps_ptr, cols, mask, C, PROB, HAS_WEIGHT, SMOOTH, ACC):
    """a_c for one block: w_c q_c (probability targets) or w_c (label smoothing); 0 when masked."""
    if PROB:
        a = tl.load(t_row + cols * t_sc, mask=mask, other=0.0).to(ACC)
        if SMOOTH:
            eps = tl.load(eps_ptr).to(ACC)
            a = tl.where(mask, a * (1.0 - eps) + eps / C, 0.0)
        if HAS_WEIGHT:
            a = a * tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
    elif HAS_WEIGHT:
        a = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
    else:
        a = tl.where(mask, 1.0, 0.0).to(ACC)
    return a


@triton.jit
def _index_target(y_ptr, w_ptr, row, ignore_index, HAS_WEIGHT, ACC):
    """(y, kept, w_y) of one row; ignored rows get y = 0 and w_y = 0 so nothing is gathered."""
    y = tl.load(y_ptr + row)
    keep = y != ignore_index
    y = tl.where(keep, y, 0)
    if HAS_WEIGHT:
        w_y = tl.load(w_ptr + y, mask=keep, other=0.0).to(ACC)
    else:
        w_y = tl.where(keep, 1.0, 0.0).to(ACC)
    return y, keep, w_y


@triton.jit
def _store_row_loss(
    m, s, A, B, x_row, x_sc, y, keep, w_y, eps_ptr, loss_ptr, stats_ptr, row, C, PROB, SMOOTH, ACC
):  # fmt: skip
    """Store the row's loss and statistics (r, log s, B, nll, smooth); lse = r + log s.

    lse - x_c is evaluated as (r - x_c) + log s, the order torch's log_softmax rounds in, and
    sum_c a_c (lse - x_c) = B log s - A. nll and smooth are the two terms torch reduces separately
    for label smoothing, so the reduced loss keeps torch's inf/NaN behaviour (zero total weight).
    """
    r = finite_ref(m)
    log_s = tl.log(s)
    smooth = B * log_s - A
    if PROB:
        nll = smooth
        loss = smooth
    else:
        x_y = tl.load(x_row + y * x_sc, mask=keep, other=0.0).to(ACC)
        nll = tl.where(keep, w_y * ((r - x_y) + log_s), 0.0)
        smooth = tl.where(keep, smooth, 0.0)
        if SMOOTH:
            eps = tl.load(eps_ptr).to(ACC)
            loss = tl.where(keep, (1.0 - eps) * nll + (eps / C) * smooth, 0.0)
        else:
            loss = nll
    tl.store(loss_ptr + row, loss)
    tl.store(stats_ptr + row * 5, r)
    tl.store(stats_ptr + row * 5 + 1, log_s)
    tl.store(stats_ptr + row * 5 + 2, B)
    tl.store(stats_ptr + row * 5 + 3, nll)
    tl.store(stats_ptr + row * 5 + 4, smooth)
    return r, log_s


@triton.jit
def _grad_coefficients(scale, keep, w_y, eps_ptr, C, PROB, SMOOTH, ACC):
    """(c1, c2): dx = c1 (p - onehot) + c2 (p B - w) for class indices, c1 (p B - a) for probabilities.

    The row scale multiplies each term's own factor first, as torch's chain rule does, so a zero
    total weight (scale = inf) gives NaN rows exactly where torch gives them.
    """
    if PROB:
        c1 = scale
        c2 = scale
    else:
        coef = tl.where(keep, scale, 0.0)
        if SMOOTH:
            eps = tl.load(eps_ptr).to(ACC)
            c1 = coef * (1.0 - eps) * w_y
            c2 = coef * (eps / C)
        else:
            c1 = coef * w_y
            c2 = coef
    return c1, c2


@triton.jit
def _grad_block(x, a, cols, y, r, log_s, B, c1, c2, PROB, SMOOTH):
    """Gradient of one block of logits (see the module docstring for the identities)."""
    p = tl.exp((x - r) - log_s)
    if PROB:
        g = c1 * (p * B - a)
    else:
        g = c1 * (p - tl.where(cols == y, 1.0, 0.0))
        if SMOOTH:
            g += c2 * (p * B - a)
    return g


@triton.jit
def _ce_rows_kernel(
    x_ptr, x_sn, x_sc, x_ss,
    t_ptr, t_sn, t_sc, t_ss,
    y_ptr, w_ptr, eps_ptr, scale_ptr,
    loss_ptr, stats_ptr, part_ptr,
    g_ptr, g_sn, g_sc, g_ss,
    C, S, seg_len, n_seg, ignore_index,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, WRITE_GRAD: tl.constexpr,
    ROW_SCALE: tl.constexpr, SPLIT: tl.constexpr, SINGLE_BLOCK: tl.constexpr, BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):  # fmt: skip
    NEED_A: tl.constexpr = PROB or SMOOTH
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1).to(tl.int64)
    n = row // S
    pos = row - n * S
    x_row = x_ptr + n * x_sn + pos * x_ss
    t_row = t_ptr + n * t_sn + pos * t_ss
    lo = seg * seg_len
    hi = tl.minimum(lo + seg_len, C)

    if SINGLE_BLOCK:
        # The whole row lives in registers from here to the gradient store: one read, one write.
        cols = tl.arange(0, BLOCK).to(tl.int64)  # int64: cols * class stride may pass 2**31
        mask = cols < C
        x = tl.load(x_row + cols * x_sc, mask=mask, other=float("-inf")).to(ACC)
        a = _target_coefficients(t_row, t_sc, w_ptr, eps_ptr, cols, mask, C, PROB, HAS_WEIGHT, SMOOTH, ACC)
        m, s, A, B = block_stats(x, a, mask, NEED_A)
    else:
        m = tl.full((), float("-inf"), ACC)
        s = tl.zeros((), ACC)
        A = s
        B = s
        for start in range(lo, hi, BLOCK):
            cols_b = start + tl.arange(0, BLOCK).to(tl.int64)
            mask_b = cols_b < hi
            x_b = tl.load(x_row + cols_b * x_sc, mask=mask_b, other=float("-inf")).to(ACC)
            a_b = _target_coefficients(t_row, t_sc, w_ptr, eps_ptr, cols_b, mask_b, C, PROB, HAS_WEIGHT, SMOOTH, ACC)
            m_b, s_b, A_b, B_b = block_stats(x_b, a_b, mask_b, NEED_A)
            m, s, A, B = merge_stats(m, s, A, B, m_b, s_b, A_b, B_b)

    if SPLIT:
        part = part_ptr + (row * n_seg + seg) * 4
        tl.store(part, m)
        tl.store(part + 1, s)
        tl.store(part + 2, A)
        tl.store(part + 3, B)
    else:
        if PROB:
            y = 0
            keep = True
            w_y = 1.0
        else:
            y, keep, w_y = _index_target(y_ptr, w_ptr, row, ignore_index, HAS_WEIGHT, ACC)
        r, log_s = _store_row_loss(
            m, s, A, B, x_row, x_sc, y, keep, w_y, eps_ptr, loss_ptr, stats_ptr, row, C, PROB, SMOOTH, ACC
        )
        if WRITE_GRAD:
            if ROW_SCALE:
                scale = tl.load(scale_ptr + row).to(ACC)
            else:
                scale = tl.load(scale_ptr).to(ACC)
            c1, c2 = _grad_coefficients(scale, keep, w_y, eps_ptr, C, PROB, SMOOTH, ACC)
            g_row = g_ptr + n * g_sn + pos * g_ss
            if SINGLE_BLOCK:
                g = _grad_block(x, a, cols, y, r, log_s, B, c1, c2, PROB, SMOOTH)
                tl.store(g_row + cols * g_sc, g, mask=mask)
            else:
                for start in range(0, C, BLOCK):
                    cols_g = start + tl.arange(0, BLOCK).to(tl.int64)
                    mask_g = cols_g < C
                    x_g = tl.load(x_row + cols_g * x_sc, mask=mask_g, other=float("-inf")).to(ACC)
                    a_g = _target_coefficients(
                        t_row, t_sc, w_ptr, eps_ptr, cols_g, mask_g, C, PROB, HAS_WEIGHT, SMOOTH, ACC
                    )
                    g = _grad_block(x_g, a_g, cols_g, y, r, log_s, B, c1, c2, PROB, SMOOTH)
                    tl.store(g_row + cols_g * g_sc, g, mask=mask_g)


@triton.jit
def _ce_combine_kernel(
    part_ptr, x_ptr, x_sn, x_sc, x_ss,
    y_ptr, w_ptr, eps_ptr, loss_ptr, stats_ptr,
    C, S, n_seg, ignore_index,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
    SEG_BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    n = row // S
    pos = row - n * S
    x_row = x_ptr + n * x_sn + pos * x_ss
    k = tl.arange(0, SEG_BLOCK)
    mask = k < n_seg
    part = part_ptr + (row * n_seg + k) * 4
    m_k = tl.load(part, mask=mask, other=float("-inf"))
    s_k = tl.load(part + 1, mask=mask, other=0.0)
    A_k = tl.load(part + 2, mask=mask, other=0.0)
    B_k = tl.load(part + 3, mask=mask, other=0.0)
    # The same merge as merge_stats, over all segments at once.
    m = tl.max(m_k, 0)
    r = finite_ref(m)
    r_k = finite_ref(m_k)
    s = tl.sum(tl.where(m_k == float("-inf"), 0.0, s_k * tl.exp(r_k - r)), 0)
    A = tl.sum(tl.where(mask, A_k + B_k * (r_k - r), 0.0), 0)
    B = tl.sum(B_k, 0)
    if PROB:
        y = 0
        keep = True
        w_y = 1.0
    else:
        y, keep, w_y = _index_target(y_ptr, w_ptr, row, ignore_index, HAS_WEIGHT, ACC)
    _store_row_loss(m, s, A, B, x_row, x_sc, y, keep, w_y, eps_ptr, loss_ptr, stats_ptr, row, C, PROB, SMOOTH, ACC)


@triton.jit
def _ce_grad_kernel(
    x_ptr, x_sn, x_sc, x_ss,
    t_ptr, t_sn, t_sc, t_ss,
    y_ptr, w_ptr, eps_ptr, scale_ptr, stats_ptr,
    g_ptr, g_sn, g_sc, g_ss,
    dt_ptr, dt_sn, dt_sc, dt_ss,
    C, S, seg_len, ignore_index,
    PROB: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr, ROW_SCALE: tl.constexpr,
    WRITE_DX: tl.constexpr, WRITE_DT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1).to(tl.int64)
    n = row // S
    pos = row - n * S
    x_row = x_ptr + n * x_sn + pos * x_ss
    t_row = t_ptr + n * t_sn + pos * t_ss
    g_row = g_ptr + n * g_sn + pos * g_ss
    dt_row = dt_ptr + n * dt_sn + pos * dt_ss
    lo = seg * seg_len
    hi = tl.minimum(lo + seg_len, C)
    r = tl.load(stats_ptr + row * 5).to(ACC)
    log_s = tl.load(stats_ptr + row * 5 + 1).to(ACC)
    B = tl.load(stats_ptr + row * 5 + 2).to(ACC)
    if ROW_SCALE:
        scale = tl.load(scale_ptr + row).to(ACC)
    else:
        scale = tl.load(scale_ptr).to(ACC)
    if PROB:
        y = 0
        keep = True
        w_y = 1.0
    else:
        y, keep, w_y = _index_target(y_ptr, w_ptr, row, ignore_index, HAS_WEIGHT, ACC)
    c1, c2 = _grad_coefficients(scale, keep, w_y, eps_ptr, C, PROB, SMOOTH, ACC)
    for start in range(lo, hi, BLOCK):
        cols = start + tl.arange(0, BLOCK).to(tl.int64)
        mask = cols < hi
        x = tl.load(x_row + cols * x_sc, mask=mask, other=float("-inf")).to(ACC)
        if WRITE_DX:
            a = _target_coefficients(t_row, t_sc, w_ptr, eps_ptr, cols, mask, C, PROB, HAS_WEIGHT, SMOOTH, ACC)
            g = _grad_block(x, a, cols, y, r, log_s, B, c1, c2, PROB, SMOOTH)
            tl.store(g_row + cols * g_sc, g, mask=mask)
        if WRITE_DT:
            # d/dt_c of -sum_k w_k q_k lp_k with q = (1 - eps) t + eps / C.
            dt = ((r - x) + log_s) * scale
            if SMOOTH:
                dt = dt * (1.0 - tl.load(eps_ptr).to(ACC))
            if HAS_WEIGHT:
                dt = dt * tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
            tl.store(dt_row + cols * dt_sc, dt, mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers. They take the (N, C, S) view and allocate nothing the caller did not ask for
# besides O(rows) statistics.
# ---------------------------------------------------------------------------------------------


STATS = 5  # per-row statistics saved for backward: r, log s, sum a, nll, smooth


@dataclasses.dataclass(frozen=True)
class CrossEntropyOptions:
    """Non-tensor options of one cross-entropy call (stored on the autograd context)."""

    ignore_index: int
    label_smoothing: float
    reduction: str
    prob: bool

    @property
    def smooth(self) -> bool:
        return self.label_smoothing > 0.0


def _strides(t: Tensor | None) -> tuple[int, int, int]:
    return (t.stride(0), t.stride(1), t.stride(2)) if t is not None else (0, 0, 0)


def _accumulation_dtype(x: Tensor, target: Tensor, weight: Tensor | None, prob: bool) -> torch.dtype:
    dtypes = [x.dtype] + ([target.dtype] if prob else []) + ([weight.dtype] if weight is not None else [])
    return acc_dtype(*dtypes)


def row_statistics(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    opts: CrossEntropyOptions,
    *,
    grad: Tensor | None = None,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row loss and statistics of the (N, C, S) logits ``x``; optionally write the gradient.

    ``grad`` (same shape as ``x``, may be ``x`` itself) receives d(sum_n scale_n loss_n)/dx, with
    ``scale`` 0-d (the same factor for every row) or (rows,) (contiguous).
    Returns ``(loss_rows, stats)``: (rows,) and (rows, 5) = (r, log s, sum a, nll, smooth) per
    row with lse = r + log s, in the accumulation dtype.
    """
    N, C, S = x.shape
    rows = N * S
    acc = _accumulation_dtype(x, target, weight, opts.prob)
    device = x.device
    loss_rows = torch.empty(rows, dtype=acc, device=device)
    stats = torch.empty(rows, STATS, dtype=acc, device=device)
    eps = torch.full((1,), max(opts.label_smoothing, 0.0), dtype=acc, device=device)
    if scale is None:
        scale = torch.ones((), dtype=acc, device=device)
    lay = split_rows(rows, C, tuning(device), _values_per_col(opts, acc, weight is not None))
    target_3d = target if opts.prob else None
    index_target = target if not opts.prob else loss_rows
    flags = dict(PROB=opts.prob, HAS_WEIGHT=weight is not None, SMOOTH=opts.smooth, ACC=tl_dtype(acc))
    common = dict(
        x_ptr=x, x_sn=x.stride(0), x_sc=x.stride(1), x_ss=x.stride(2),
        y_ptr=index_target, w_ptr=weight if weight is not None else eps, eps_ptr=eps,
        C=C, S=S, ignore_index=opts.ignore_index,
    )  # fmt: skip
    t_sn, t_sc, t_ss = _strides(target_3d)
    g_sn, g_sc, g_ss = _strides(grad)
    split = lay.segments > 1
    part = torch.empty(rows, lay.segments, 4, dtype=acc, device=device) if split else loss_rows
    launch(
        _ce_rows_kernel,
        (rows, lay.segments),
        **common,
        t_ptr=target_3d if target_3d is not None else x, t_sn=t_sn, t_sc=t_sc, t_ss=t_ss,
        scale_ptr=scale, loss_ptr=loss_rows, stats_ptr=stats, part_ptr=part,
        g_ptr=grad if grad is not None else x, g_sn=g_sn, g_sc=g_sc, g_ss=g_ss,
        seg_len=lay.segment_len, n_seg=lay.segments,
        WRITE_GRAD=grad is not None and not split, ROW_SCALE=scale.dim() > 0, SPLIT=split,
        SINGLE_BLOCK=lay.single_block, BLOCK=lay.block, **flags,
        num_warps=_warps(lay.block, lay.single_block),
    )  # fmt: skip
    if split:
        launch(
            _ce_combine_kernel,
            (rows,),
            part_ptr=part, **common, loss_ptr=loss_rows, stats_ptr=stats, n_seg=lay.segments,
            SEG_BLOCK=max(triton.next_power_of_2(lay.segments), 2), **flags,
            num_warps=1,
        )  # fmt: skip
        if grad is not None:
            gradient_from_statistics(x, target, weight, opts, stats, scale, grad=grad)
    return loss_rows, stats


def gradient_from_statistics(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    opts: CrossEntropyOptions,
    stats: Tensor,
    scale: Tensor,
    *,
    grad: Tensor | None = None,
    grad_target: Tensor | None = None,
) -> None:
    """Write dx into ``grad`` and/or dt into ``grad_target`` from the saved ``stats`` (see above).

    ``scale`` is 0-d (one factor for all rows) or (rows,) (reduction 'none').
    """
    N, C, S = x.shape
    rows = N * S
    acc = stats.dtype
    eps = torch.full((1,), max(opts.label_smoothing, 0.0), dtype=acc, device=x.device)
    lay = split_rows(rows, C, tuning(x.device), _values_per_col(opts, acc, weight is not None))
    # The gradient kernel streams (read x, write dx: nothing to keep on chip); segments keep
    # few-row calls parallel.
    block = min(lay.block, tuning(x.device).stream_block)
    seg_len = lay.segment_len if lay.segments > 1 else C
    segments = triton.cdiv(C, seg_len) if C > 0 else 1
    target_3d = target if opts.prob else None
    t_sn, t_sc, t_ss = _strides(target_3d)
    g_sn, g_sc, g_ss = _strides(grad)
    dt_sn, dt_sc, dt_ss = _strides(grad_target)
    launch(
        _ce_grad_kernel,
        (rows, segments),
        x_ptr=x, x_sn=x.stride(0), x_sc=x.stride(1), x_ss=x.stride(2),
        t_ptr=target_3d if target_3d is not None else x, t_sn=t_sn, t_sc=t_sc, t_ss=t_ss,
        y_ptr=target if not opts.prob else stats, w_ptr=weight if weight is not None else eps,
        eps_ptr=eps, scale_ptr=scale, stats_ptr=stats,
        g_ptr=grad if grad is not None else x, g_sn=g_sn, g_sc=g_sc, g_ss=g_ss,
        dt_ptr=grad_target if grad_target is not None else x, dt_sn=dt_sn, dt_sc=dt_sc, dt_ss=dt_ss,
        C=C, S=S, seg_len=seg_len, ignore_index=opts.ignore_index,
        PROB=opts.prob, HAS_WEIGHT=weight is not None, SMOOTH=opts.smooth,
        ROW_SCALE=scale.dim() > 0, WRITE_DX=grad is not None, WRITE_DT=grad_target is not None,
        BLOCK=block, ACC=tl_dtype(acc),
        num_warps=_warps(block, False),
    )  # fmt: skip


def _values_per_col(opts: CrossEntropyOptions, acc: torch.dtype, weighted: bool) -> int:
    """Registers' worth of values a column keeps on chip: logit (+ target coefficient, for probability
    targets and for label smoothing with class weights), x2 for float64."""
    coefficients = opts.prob or (opts.smooth and weighted)
    return (2 if coefficients else 1) * (2 if acc == torch.float64 else 1)


def _warps(block: int, single_block: bool) -> int:
    # A streamed block is reloaded every iteration; half the warps keep more loads in flight each.
    return num_warps_for(block) if single_block else max(4, num_warps_for(block) // 2)
