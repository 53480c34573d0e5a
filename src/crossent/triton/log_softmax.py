"""Triton ``log_softmax`` and ``softmax`` along any dim, forward and backward.

The input is viewed as (outer, C, inner) with the softmax dim in the middle, so any dim works
without a transpose copy. A row that fits on chip is read once and written once; wider rows take
a second read (online log-sum-exp first).

Identities (y = output, g = incoming gradient, sums over the softmax dim):
    log_softmax:  y = x - lse,      dx = g - exp(y) sum g
    softmax:      y = exp(x - lse), dx = y (g - sum g y)
"""

from __future__ import annotations

import math

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


@triton.jit
def _softmax_forward_kernel(
    x_ptr, x_so, x_sc, x_si, y_ptr, y_so, y_sc, y_si, C, S,
    LOG: tl.constexpr, SINGLE_BLOCK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    n = row // S
    pos = row - n * S
    x_row = x_ptr + n * x_so + pos * x_si
    y_row = y_ptr + n * y_so + pos * y_si
    if SINGLE_BLOCK:
        cols = tl.arange(0, BLOCK).to(tl.int64)  # int64: cols * class stride may pass 2**31
        mask = cols < C
        x = tl.load(x_row + cols * x_sc, mask=mask, other=float("-inf")).to(ACC)
        m, s, _A, _B = block_stats(x, x, mask, False)
    else:
        m = tl.full((), float("-inf"), ACC)
        s = tl.zeros((), ACC)
        for start in range(0, C, BLOCK):
            cols_b = start + tl.arange(0, BLOCK).to(tl.int64)
            mask_b = cols_b < C
            x_b = tl.load(x_row + cols_b * x_sc, mask=mask_b, other=float("-inf")).to(ACC)
            m_b, s_b, _Ab, _Bb = block_stats(x_b, x_b, mask_b, False)
            m, s, _A, _B = merge_stats(m, s, s, s, m_b, s_b, s_b, s_b)
    lse = finite_ref(m) + tl.log(s)
    if SINGLE_BLOCK:
        y = x - lse
        if not LOG:
            y = tl.exp(y)
        tl.store(y_row + cols * y_sc, y, mask=mask)
    else:
        for start in range(0, C, BLOCK):
            cols_w = start + tl.arange(0, BLOCK).to(tl.int64)
            mask_w = cols_w < C
            y_w = tl.load(x_row + cols_w * x_sc, mask=mask_w, other=0.0).to(ACC) - lse
            if not LOG:
                y_w = tl.exp(y_w)
            tl.store(y_row + cols_w * y_sc, y_w, mask=mask_w)


@triton.jit
def _softmax_backward_kernel(
    g_ptr, g_so, g_sc, g_si, y_ptr, y_so, y_sc, y_si, dx_ptr, dx_so, dx_sc, dx_si, C, S,
    LOG: tl.constexpr, SINGLE_BLOCK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    n = row // S
    pos = row - n * S
    g_row = g_ptr + n * g_so + pos * g_si
    y_row = y_ptr + n * y_so + pos * y_si
    dx_row = dx_ptr + n * dx_so + pos * dx_si
    if SINGLE_BLOCK:
        cols = tl.arange(0, BLOCK).to(tl.int64)  # int64: cols * class stride may pass 2**31
        mask = cols < C
        g = tl.load(g_row + cols * g_sc, mask=mask, other=0.0).to(ACC)
        y = tl.load(y_row + cols * y_sc, mask=mask, other=0.0).to(ACC)
        if LOG:
            total = tl.sum(g, 0)
            tl.store(dx_row + cols * dx_sc, g - tl.exp(y) * total, mask=mask)
        else:
            total = tl.sum(g * y, 0)
            tl.store(dx_row + cols * dx_sc, y * (g - total), mask=mask)
    else:
        total = tl.zeros((), ACC)
        for start in range(0, C, BLOCK):
            cols_b = start + tl.arange(0, BLOCK).to(tl.int64)
            mask_b = cols_b < C
            g_b = tl.load(g_row + cols_b * g_sc, mask=mask_b, other=0.0).to(ACC)
            if LOG:
                total += tl.sum(g_b, 0)
            else:
                total += tl.sum(g_b * tl.load(y_row + cols_b * y_sc, mask=mask_b, other=0.0).to(ACC), 0)
        for start in range(0, C, BLOCK):
            cols_w = start + tl.arange(0, BLOCK).to(tl.int64)
            mask_w = cols_w < C
            g_w = tl.load(g_row + cols_w * g_sc, mask=mask_w, other=0.0).to(ACC)
            y_w = tl.load(y_row + cols_w * y_sc, mask=mask_w, other=0.0).to(ACC)
            if LOG:
                dx_w = g_w - tl.exp(y_w) * total
            else:
                dx_w = y_w * (g_w - total)
            tl.store(dx_row + cols_w * dx_sc, dx_w, mask=mask_w)


def _as_rows(t: Tensor, dim: int) -> Tensor:
    """``t`` viewed (or copied, if its strides do not allow a view) as (outer, C, inner)."""
    shape = t.shape
    return t.reshape(math.prod(shape[:dim]), shape[dim] if t.dim() else 1, math.prod(shape[dim + 1 :]))


def _layout(x3: Tensor, tensors: int) -> tuple[int, int, bool]:
    """(block, warps, single block) for rows of ``tensors`` values a column (float64 counts twice)."""
    outer, C, inner = x3.shape
    values = tensors * (2 if x3.dtype == torch.float64 else 1)
    lay = split_rows(outer * inner, C, tuning(x3.device), values)
    return lay.block, num_warps_for(lay.block), lay.single_block


def _forward(input: Tensor, dim: int, log: bool) -> Tensor:
    x = _as_rows(input, dim)
    y = torch.empty(x.shape, dtype=input.dtype, device=input.device)
    outer, C, inner = x.shape
    block, warps, single = _layout(x, tensors=1)
    launch(
        _softmax_forward_kernel,
        (outer * inner,),
        x_ptr=x, x_so=x.stride(0), x_sc=x.stride(1), x_si=x.stride(2),
        y_ptr=y, y_so=y.stride(0), y_sc=y.stride(1), y_si=y.stride(2), C=C, S=inner,
        LOG=log, SINGLE_BLOCK=single, BLOCK=block, ACC=tl_dtype(acc_dtype(input.dtype)), num_warps=warps,
    )  # fmt: skip
    return y.reshape(input.shape)


def _backward_launch(grad: Tensor, out: Tensor, dim: int, log: bool) -> Tensor:
    y = _as_rows(out, dim)
    g = _as_rows(grad, dim)
    dx = torch.empty(y.shape, dtype=out.dtype, device=out.device)
    outer, C, inner = y.shape
    block, warps, single = _layout(y, tensors=2)  # the gradient and the output
    launch(
        _softmax_backward_kernel,
        (outer * inner,),
        g_ptr=g, g_so=g.stride(0), g_sc=g.stride(1), g_si=g.stride(2),
        y_ptr=y, y_so=y.stride(0), y_sc=y.stride(1), y_si=y.stride(2),
        dx_ptr=dx, dx_so=dx.stride(0), dx_sc=dx.stride(1), dx_si=dx.stride(2), C=C, S=inner,
        LOG=log, SINGLE_BLOCK=single, BLOCK=block, ACC=tl_dtype(acc_dtype(out.dtype)), num_warps=warps,
    )  # fmt: skip
    return dx.reshape(out.shape)


@torch.library.custom_op("crossent_triton::log_softmax", mutates_args=())
def log_softmax_op(input: Tensor, dim: int) -> Tensor:
    """log_softmax of ``input`` along the normalised ``dim``."""
    return _forward(input, dim, log=True)


@torch.library.custom_op("crossent_triton::softmax", mutates_args=())
def softmax_op(input: Tensor, dim: int) -> Tensor:
    """softmax of ``input`` along the normalised ``dim``."""
    return _forward(input, dim, log=False)


@torch.library.custom_op("crossent_triton::softmax_backward", mutates_args=())
def softmax_backward_op(grad: Tensor, output: Tensor, dim: int, log: bool) -> Tensor:
    """dx of (log_)softmax from its output and the incoming gradient."""
    return _backward_launch(grad, output, dim, log)


@log_softmax_op.register_fake
@softmax_op.register_fake
def _softmax_fake(input, dim):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@softmax_backward_op.register_fake
def _softmax_backward_fake(grad, output, dim, log):
    return torch.empty_like(output, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    ctx.dim = inputs[1]
    ctx.save_for_backward(output)


def _backward(ctx, grad, *, log: bool):
    if torch.is_grad_enabled():
        raise RuntimeError("crossent's Triton softmax kernels have no double backward; use impl='torch'")
    (output,) = ctx.saved_tensors
    return softmax_backward_op(grad, output, ctx.dim, log), None


def _log_backward(ctx, grad):
    return _backward(ctx, grad, log=True)


def _plain_backward(ctx, grad):
    return _backward(ctx, grad, log=False)


log_softmax_op.register_autograd(_log_backward, setup_context=_setup_context)
softmax_op.register_autograd(_plain_backward, setup_context=_setup_context)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    """Logarithm of softmax along ``dim``, on Triton kernels (float32 accumulation).

    y_i = x_i - log sum_j exp(x_j) along ``dim``; a slice with +inf or NaN gives NaN, an all -inf
    slice gives NaN, a -inf entry among finite ones gives -inf. No reduction.

    Shape:
        - input: any shape (the caller already cast it to the requested dtype)
        - output: same shape and dtype as the input

    Example:
        >>> import torch
        >>> from crossent.triton import log_softmax
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> log_softmax(torch.tensor([[1.0, 2.0]], device=device), 1).cpu()
        tensor([[-1.3133, -0.3133]])
    """
    return log_softmax_op(input, dim % max(input.dim(), 1))


def softmax(input: Tensor, dim: int) -> Tensor:
    """Softmax along ``dim``, on Triton kernels (float32 accumulation).

    y_i = exp(x_i - log sum_j exp(x_j)) along ``dim``; same non-finite rules as ``log_softmax``.
    No reduction.

    Shape:
        - input: any shape
        - output: same shape and dtype as the input

    Example:
        >>> import torch
        >>> from crossent.triton import softmax
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> softmax(torch.tensor([[1.0, 2.0]], device=device), -1).cpu()
        tensor([[0.2689, 0.7311]])
    """
    return softmax_op(input, dim % max(input.dim(), 1))
