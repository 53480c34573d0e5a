"""Triton ``kl_div``: element-wise KL divergence terms with torch's reductions, forward and backward.

The gradient with respect to the input does not depend on the input (-t or -exp(t)), so the
backward reads only the target for it.

Identities (G = grad_output / numel for 'mean', / input.size(0) for 'batchmean'):
    probabilities: l = xlogy(t, t) - t x,   dx = -t G,       dt = (xlogy(t != 0, t) + t / t - x) G
    log target:    l = exp(t) (t - x),      dx = -exp(t) G,  dt = exp(t) (t - x + 1) G
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.triton._common import launch, tl_dtype
from crossent.triton._elementwise import element_grid, reduce_partials


@triton.jit
def _kl_forward_kernel(
    x_ptr, t_ptr, out_ptr, numel,
    LOG_TARGET: tl.constexpr, REDUCE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    if LOG_TARGET:
        loss = tl.exp(t) * (t - x)
    else:
        # xlogy(t, t) is 0 at t = 0 (and NaN for NaN t, since NaN != 0).
        loss = tl.where(t == 0.0, 0.0, t * tl.log(t)) - t * x
    if REDUCE:
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), 0))
    else:
        tl.store(out_ptr + offs, loss, mask=mask)


@triton.jit
def _kl_backward_kernel(
    x_ptr, t_ptr, g_ptr, dx_ptr, dt_ptr, numel,
    LOG_TARGET: tl.constexpr, ELEMENT_SCALE: tl.constexpr, WRITE_DX: tl.constexpr, WRITE_DT: tl.constexpr,
    BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    if ELEMENT_SCALE:
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        g = tl.load(g_ptr).to(ACC)
    if LOG_TARGET:
        p = tl.exp(t)
        if WRITE_DX:
            tl.store(dx_ptr + offs, -p * g, mask=mask)
        if WRITE_DT:
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
            tl.store(dt_ptr + offs, p * (t - x + 1.0) * g, mask=mask)
    else:
        if WRITE_DX:
            tl.store(dx_ptr + offs, -t * g, mask=mask)
        if WRITE_DT:
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
            # torch differentiates xlogy(t, t) as xlogy(t != 0, t) + t / t: NaN at t = 0.
            log_t = tl.where(t != 0.0, tl.log(t), 0.0)
            tl.store(dt_ptr + offs, (log_t + t / t - x) * g, mask=mask)


def _broadcast_pair(x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Both operands at their broadcast shape, contiguous (a copy only when shapes differ)."""
    if x.shape == target.shape:
        return x.contiguous(), target.contiguous()
    shape = torch.broadcast_shapes(x.shape, target.shape)
    return x.expand(shape).contiguous(), target.expand(shape).contiguous()


def _divisor(x: Tensor, numel: int, reduction: str) -> int:
    if reduction == "batchmean":
        return x.shape[0] if x.dim() else 1
    return numel


@torch.library.custom_op("crossent_triton::kl_div", mutates_args=())
def kl_div_op(x: Tensor, target: Tensor, reduction: str, log_target: bool) -> Tensor:
    """KL terms of log-probabilities ``x`` against ``target``, reduced as asked."""
    xb, tb = _broadcast_pair(x, target)
    numel = xb.numel()
    acc = acc_dtype(x.dtype, target.dtype)
    block, grid = element_grid(numel, x.device)
    reduce = reduction != "none"
    out = torch.empty(grid[0] if reduce else numel, dtype=acc, device=x.device)
    launch(
        _kl_forward_kernel, grid, x_ptr=xb, t_ptr=tb, out_ptr=out, numel=numel,
        LOG_TARGET=log_target, REDUCE=reduce, BLOCK=block, ACC=tl_dtype(acc),
    )  # fmt: skip
    loss = reduce_partials(out, reduction, _divisor(x, numel, reduction)) if reduce else out.reshape(xb.shape)
    return loss.to(torch.promote_types(x.dtype, target.dtype))


@kl_div_op.register_fake
def _kl_div_fake(x, target, reduction, log_target):
    shape = torch.broadcast_shapes(x.shape, target.shape) if reduction == "none" else ()
    return x.new_empty(shape, dtype=torch.promote_types(x.dtype, target.dtype))


@torch.library.custom_op("crossent_triton::kl_div_backward", mutates_args=())
def kl_div_backward_op(
    grad: Tensor,
    x: Tensor,
    target: Tensor,
    reduction: str,
    log_target: bool,
    want_input_grad: bool,
    want_target_grad: bool,
) -> tuple[Tensor, Tensor]:
    """(dx, dt) summed back to the operands' own shapes; an unwanted gradient comes back empty."""
    xb, tb = _broadcast_pair(x, target)
    numel = xb.numel()
    acc = acc_dtype(x.dtype, target.dtype)
    if reduction == "none":
        scale = grad.expand(xb.shape).contiguous()
    else:
        scale = grad.to(acc) / _divisor(x, numel, reduction) if reduction != "sum" else grad
    dx = torch.empty(xb.shape, dtype=acc, device=x.device) if want_input_grad else x.new_empty(0)
    dt = torch.empty(tb.shape, dtype=acc, device=x.device) if want_target_grad else target.new_empty(0)
    block, grid = element_grid(numel, x.device)
    launch(
        _kl_backward_kernel, grid, x_ptr=xb, t_ptr=tb, g_ptr=scale, dx_ptr=dx, dt_ptr=dt, numel=numel,
        LOG_TARGET=log_target, ELEMENT_SCALE=reduction == "none", WRITE_DX=want_input_grad,
        WRITE_DT=want_target_grad, BLOCK=block, ACC=tl_dtype(acc),
    )  # fmt: skip
    if want_input_grad:
        dx = dx.sum_to_size(x.shape).to(x.dtype)
    if want_target_grad:
        dt = dt.sum_to_size(target.shape).to(target.dtype)
    return dx, dt


@kl_div_backward_op.register_fake
def _kl_div_backward_fake(grad, x, target, reduction, log_target, want_input_grad, want_target_grad):  # noqa: E501
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if want_input_grad else x.new_empty(0)
    dt = torch.empty_like(target, memory_format=torch.contiguous_format) if want_target_grad else target.new_empty(0)
    return dx, dt


def _setup_context(ctx, inputs, output) -> None:
    x, target, reduction, log_target = inputs
    ctx.reduction, ctx.log_target = reduction, log_target
    ctx.save_for_backward(x, target)


def _backward(ctx, grad):
    if torch.is_grad_enabled():
        raise RuntimeError("crossent's Triton kl_div has no double backward; use impl='torch'")
    x, target = ctx.saved_tensors
    want_dx, want_dt = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx, dt = kl_div_backward_op(grad, x, target, ctx.reduction, ctx.log_target, want_dx, want_dt)
    return (dx if want_dx else None), (dt if want_dt else None), None, None


kl_div_op.register_autograd(_backward, setup_context=_setup_context)


def kl_div(input: Tensor, target: Tensor, reduction: str, log_target: bool) -> Tensor:
    """Kullback-Leibler divergence terms of log-probabilities against a target, on Triton kernels.

    Unreduced: l = xlogy(t, t) - t x (probability target; 0 where t = 0) or exp(t) (t - x)
    (``log_target=True``), at the broadcast shape. 'sum' adds; 'mean' divides by the number of
    elements; 'batchmean' divides by input.size(0) (1 for a 0-d input).

    Shape:
        - input, target: broadcastable, floating (a shape mismatch costs one contiguous copy)
        - output: () unless 'none', else the broadcast shape; dtype promote(input, target)

    Example:
        >>> import torch
        >>> from crossent.triton import kl_div
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> log_q = torch.tensor([[0.5, 0.2, 0.3]], device=device).log().requires_grad_()
        >>> loss = kl_div(log_q, torch.tensor([[1.0, 0.0, 0.0]], device=device), "batchmean", False)
        >>> round(loss.item(), 4)  # KL(p || q) = log 2
        0.6931
        >>> loss.backward()
    """
    return kl_div_op(input, target, reduction, log_target)
