"""Softmax and log-softmax along any dim, blocked so each block's exponentials stay in cache."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from crossent._engine import exp
from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype, as_rows, blocks


def around_dim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """View ``x`` as ``(before, x.shape[dim], after)``; a 0-d tensor is ``(1, 1, 1)``."""
    if x.dim() == 0:
        return x.reshape(1, 1, 1)
    before = math.prod(x.shape[:dim])
    return x.reshape(before, x.shape[dim], math.prod(x.shape[dim + 1 :]))


def map_blocks(fn: Callable[..., None], dim: int, *tensors: torch.Tensor) -> torch.Tensor:
    """A new tensor of the first one's shape and dtype, each block written by ``fn(out_block, *blocks)``
    (blocks in the accumulation dtype, class dim 1; ``out_block`` is the output itself when the dtypes
    agree, so no block is copied twice)."""
    like = tensors[0]
    acc = accumulation_dtype(like.dtype)
    out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    views = [around_dim(t.contiguous(), dim) for t in tensors]
    out3 = around_dim(out, dim)
    n, c, s = out3.shape

    direct = out.dtype == acc

    def apply(block: tuple[slice, slice]) -> None:
        bn, bs = block
        inputs = [v[bn, :, bs].to(acc) for v in views]
        target = out3[bn, :, bs] if direct else torch.empty_like(inputs[0])
        fn(target, *inputs)
        if not direct:
            out3[bn, :, bs] = target

    if out.numel() > 0:
        for block in blocks(n, c, s, out.device):
            apply(block)
    return out


def _log_softmax(out: torch.Tensor, x: torch.Tensor) -> None:
    shifted = torch.sub(x, x.amax(1, keepdim=True), out=out)
    shifted.sub_(exp(shifted).sum(1, keepdim=True).log_())


def _softmax(out: torch.Tensor, x: torch.Tensor) -> None:
    e = torch.sub(x, x.amax(1, keepdim=True), out=out)
    exp(e, out=e)
    e.div_(e.sum(1, keepdim=True))


def _log_softmax_backward(out: torch.Tensor, g: torch.Tensor, y: torch.Tensor) -> None:
    # g_i - softmax_i sum_j g_j,  softmax = exp(y)
    exp(y, out=out).mul_(g.sum(1, keepdim=True).neg_()).add_(g)


def _softmax_backward(out: torch.Tensor, g: torch.Tensor, y: torch.Tensor) -> None:
    # y_i (g_i - sum_j y_j g_j)
    dot = torch.mul(y, g, out=out).sum(1, keepdim=True)
    torch.sub(g, dot, out=out).mul_(y)


def _native(log: bool, x: torch.Tensor, dim: int, grad_output: torch.Tensor | None = None) -> torch.Tensor:
    """The native kernel over rows along ``dim``, after which every dim is 1 (the forward of ``x``, or
    the backward from the forward's output ``x``)."""
    from crossent.native import kernels

    rows = as_rows(x, dim)
    if grad_output is None:
        return kernels.softmax_rows(rows, log).view(x.shape)
    return kernels.softmax_rows_backward(grad_output.contiguous().view(rows.shape), rows, log).view(x.shape)


class LogSoftmax(torch.autograd.Function):
    """``y_i = x_i - log sum_j exp(x_j)``, computed as ``(x_i - m) - log sum_j exp(x_j - m)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int, native: bool) -> torch.Tensor:
        out = _native(True, x, dim) if native else map_blocks(_log_softmax, dim, x)
        ctx.dim, ctx.native = dim, native
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # d/dx (x_i - lse) contracted with g: g_i - softmax_i sum_j g_j,  softmax = exp(y)
        (out,) = ctx.saved_tensors
        if ctx.native:
            return _native(True, out, ctx.dim, grad_output), None, None
        return map_blocks(_log_softmax_backward, ctx.dim, grad_output, out), None, None


class Softmax(torch.autograd.Function):
    """``y_i = exp(x_i - m) / sum_j exp(x_j - m)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int, native: bool) -> torch.Tensor:
        out = _native(False, x, dim) if native else map_blocks(_softmax, dim, x)
        ctx.dim, ctx.native = dim, native
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # d/dx softmax contracted with g: y_i (g_i - sum_j y_j g_j)
        (out,) = ctx.saved_tensors
        if ctx.native:
            return _native(False, out, ctx.dim, grad_output), None, None
        return map_blocks(_softmax_backward, ctx.dim, grad_output, out), None, None
