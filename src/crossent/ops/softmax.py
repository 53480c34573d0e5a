"""Softmax and log-softmax along any dim, blocked so each block's exponentials stay in cache."""

from __future__ import annotations

import math
from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype, blocks


def around_dim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """View ``x`` as ``(before, x.shape[dim], after)``; a 0-d tensor is ``(1, 1, 1)``."""
    if x.dim() == 0:
        return x.reshape(1, 1, 1)
    before = math.prod(x.shape[:dim])
    return x.reshape(before, x.shape[dim], math.prod(x.shape[dim + 1 :]))


def _each_block(*tensors: torch.Tensor) -> Any:
    n, c, s = tensors[0].shape
    if tensors[0].numel() == 0:
        return
    for bn, bs in blocks(n, c, s):
        yield tuple(t[bn, :, bs] for t in tensors)


class LogSoftmax(torch.autograd.Function):
    """``y_i = x_i - log sum_j exp(x_j)``, computed as ``(x_i - m) - log sum_j exp(x_j - m)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        acc = accumulation_dtype(x.dtype)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for xb, ob in _each_block(around_dim(x.contiguous(), dim), around_dim(out, dim)):
            shifted = xb.to(acc) - xb.amax(1, keepdim=True).to(acc)
            shifted.sub_(shifted.exp().sum(1, keepdim=True).log_())
            ob.copy_(shifted)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        # d/dx (x_i - lse) contracted with g: g_i - softmax_i sum_j g_j,  softmax = exp(y)
        (out,) = ctx.saved_tensors
        acc = accumulation_dtype(out.dtype)
        grad = torch.empty(out.shape, dtype=out.dtype, device=out.device)
        blocks3 = tuple(around_dim(t, ctx.dim) for t in (grad_output.contiguous(), out, grad))
        for gb, yb, rb in _each_block(*blocks3):
            g = gb.to(acc)
            rb.copy_(g - torch.exp(yb.to(acc)).mul_(g.sum(1, keepdim=True)))
        return grad, None


class Softmax(torch.autograd.Function):
    """``y_i = exp(x_i - m) / sum_j exp(x_j - m)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        acc = accumulation_dtype(x.dtype)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for xb, ob in _each_block(around_dim(x.contiguous(), dim), around_dim(out, dim)):
            e = (xb.to(acc) - xb.amax(1, keepdim=True).to(acc)).exp_()
            ob.copy_(e.div_(e.sum(1, keepdim=True)))
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        # d/dx softmax contracted with g: y_i (g_i - sum_j y_j g_j)
        (out,) = ctx.saved_tensors
        acc = accumulation_dtype(out.dtype)
        grad = torch.empty(out.shape, dtype=out.dtype, device=out.device)
        blocks3 = tuple(around_dim(t, ctx.dim) for t in (grad_output.contiguous(), out, grad))
        for gb, yb, rb in _each_block(*blocks3):
            g, y = gb.to(acc), yb.to(acc)
            rb.copy_(y * (g - (y * g).sum(1, keepdim=True)))
        return grad, None
