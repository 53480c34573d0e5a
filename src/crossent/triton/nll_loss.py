"""Triton ``nll_loss``: a gather in the forward, one write of the gradient in the backward.

The forward reads one value per position (z[n, y_n]), never the row. The backward writes the
whole gradient once: zeros everywhere except -w_{y_n} G at the target column.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.triton._common import launch, tl_dtype, total_target_weight, tuning


@triton.jit
def _nll_forward_kernel(
    z_ptr, z_sn, z_sc, z_ss, y_ptr, w_ptr, loss_ptr, rows, S, ignore_index,
    HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = row < rows
    y = tl.load(y_ptr + row, mask=in_range, other=ignore_index)
    keep = in_range & (y != ignore_index)
    y = tl.where(keep, y, 0)
    n = row // S
    z_y = tl.load(z_ptr + n * z_sn + (row - n * S) * z_ss + y * z_sc, mask=keep, other=0.0).to(ACC)
    if HAS_WEIGHT:
        z_y = z_y * tl.load(w_ptr + y, mask=keep, other=0.0).to(ACC)
    # l_n = -w_y z_y, exactly 0 where ignored (nothing is gathered there).
    tl.store(loss_ptr + row, tl.where(keep, -z_y, 0.0), mask=in_range)


@triton.jit
def _nll_backward_kernel(
    g_ptr, g_sn, g_sc, g_ss, y_ptr, w_ptr, scale_ptr, C, S, ignore_index,
    HAS_WEIGHT: tl.constexpr, ROW_SCALE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    y = tl.load(y_ptr + row)
    keep = y != ignore_index
    if ROW_SCALE:
        scale = tl.load(scale_ptr + row).to(ACC)
    else:
        scale = tl.load(scale_ptr).to(ACC)
    if HAS_WEIGHT:
        w_y = tl.load(w_ptr + tl.where(keep, y, 0), mask=keep, other=0.0).to(ACC)
    else:
        w_y = tl.full((), 1.0, ACC)
    # dz_{n,c} = -w_c [c = y_n] G_n; -0 * inf = NaN reproduces torch's zero-total-weight case.
    value = tl.where(keep, -w_y * scale, 0.0)
    n = row // S
    ptrs = g_ptr + n * g_sn + (row - n * S) * g_ss + cols * g_sc
    tl.store(ptrs, tl.where(cols == y, value, 0.0), mask=cols < C)


def _as_rows(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """(z as (N, C, S), target as (rows,), unreduced output shape)."""
    if input.dim() == 1:
        return input.reshape(1, input.shape[0], 1), target.reshape(1), ()
    N, C = input.shape[0], input.shape[1]
    S = math.prod(input.shape[2:])
    return input.reshape(N, C, S), target.reshape(N * S), (N, *input.shape[2:])


@torch.library.custom_op("crossent_triton::nll_loss", mutates_args=())
def nll_loss_op(
    z: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str
) -> tuple[Tensor, Tensor]:
    """(loss, G) of the (N, C, S) log-probabilities ``z``; G = 1/W for 'mean', else 1."""
    N, C, S = z.shape
    rows = N * S
    acc = acc_dtype(z.dtype)
    loss_rows = torch.empty(rows, dtype=acc, device=z.device)
    block = min(triton.next_power_of_2(max(rows, 1)), tuning(z.device).elementwise_block)
    launch(
        _nll_forward_kernel,
        (triton.cdiv(rows, block),),
        z_ptr=z, z_sn=z.stride(0), z_sc=z.stride(1), z_ss=z.stride(2), y_ptr=target,
        w_ptr=weight if weight is not None else loss_rows, loss_ptr=loss_rows, rows=rows, S=S,
        ignore_index=ignore_index, HAS_WEIGHT=weight is not None, BLOCK=block, ACC=tl_dtype(acc),
    )  # fmt: skip
    if reduction == "mean":
        total_weight = total_target_weight(target, weight, ignore_index, acc)
        return (loss_rows.sum() / total_weight).to(z.dtype), torch.reciprocal(total_weight)
    scale = torch.ones((), dtype=acc, device=z.device)
    return (loss_rows.sum() if reduction == "sum" else loss_rows).to(z.dtype), scale


@nll_loss_op.register_fake
def _nll_loss_fake(z, target, weight, ignore_index, reduction):
    N, _, S = z.shape
    loss = z.new_empty((N * S,) if reduction == "none" else ())
    return loss, z.new_empty((), dtype=acc_dtype(z.dtype))


@torch.library.custom_op("crossent_triton::nll_loss_backward", mutates_args=())
def nll_loss_backward_op(z: Tensor, target: Tensor, weight: Tensor | None, scale: Tensor, ignore_index: int) -> Tensor:
    """dz for a 0-d ``scale`` (G times grad_output) or one factor per row."""
    N, C, S = z.shape
    grad = torch.empty_like(z)
    block = min(triton.next_power_of_2(max(C, 1)), tuning(z.device).elementwise_block)
    launch(
        _nll_backward_kernel,
        (N * S, triton.cdiv(C, block)),
        g_ptr=grad, g_sn=grad.stride(0), g_sc=grad.stride(1), g_ss=grad.stride(2), y_ptr=target,
        w_ptr=weight if weight is not None else scale, scale_ptr=scale, C=C, S=S, ignore_index=ignore_index,
        HAS_WEIGHT=weight is not None, ROW_SCALE=scale.dim() > 0, BLOCK=block,
        ACC=tl_dtype(acc_dtype(z.dtype, scale.dtype)),
    )  # fmt: skip
    return grad


@nll_loss_backward_op.register_fake
def _nll_loss_backward_fake(z, target, weight, scale, ignore_index):
    return torch.empty_like(z)


def _setup_context(ctx, inputs, output) -> None:
    z, target, weight, ignore_index, reduction = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.ignore_index, ctx.reduction = ignore_index, reduction
    ctx.save_for_backward(z, target, weight, output[1])


def _backward(ctx, grad_loss, _grad_scale):
    if torch.is_grad_enabled():
        raise RuntimeError("crossent's Triton nll_loss has no double backward; use impl='torch' for create_graph=True")
    z, target, weight, scale = ctx.saved_tensors
    row_scale = grad_loss.reshape(-1).contiguous() if ctx.reduction == "none" else scale * grad_loss
    grad = nll_loss_backward_op(z, target, weight, row_scale, ctx.ignore_index) if ctx.needs_input_grad[0] else None
    return grad, None, None, None, None


nll_loss_op.register_autograd(_backward, setup_context=_setup_context)


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str) -> Tensor:
    """Negative log-likelihood of log-probabilities at class-index targets, on Triton kernels.

    Same values and gradients as ``torch.nn.functional.nll_loss``. Unreduced, per position n:
    l_n = -w_{y_n} z_{n, y_n}, and 0 where y_n == ignore_index. 'sum' adds the l_n; 'mean' divides
    by sum_n w_{y_n} over kept positions (NaN when every target is ignored).

    Shape:
        - input: (C), (N, C) or (N, C, d_1, ..., d_K), float16/bfloat16/float32/float64
        - target: (), (N) or (N, d_1, ..., d_K), int64
        - output: () for 'mean'/'sum', else the target's shape

    Example:
        >>> import torch
        >>> from crossent.triton import nll_loss
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> z = torch.tensor([[1.0, 2.0], [1.0, 3.0]], device=device).log_softmax(1).requires_grad_()
        >>> loss = nll_loss(z, torch.tensor([0, 1], device=device), None, -100, "mean")
        >>> round(loss.item(), 4)
        0.7201
        >>> loss.backward()
    """
    z, rows_target, out_shape = _as_rows(input, target)
    loss = nll_loss_op(z, rows_target, weight, ignore_index, reduction)[0]
    return loss.reshape(out_shape) if reduction == "none" else loss
