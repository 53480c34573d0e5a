"""Triton ``cross_entropy``: custom ops, their autograd, and the launcher the dispatcher calls.

Passes over the logits (B = bytes of the logits):
    forward + backward, 'mean'/'sum', row fits on chip: 1 read + 1 write (gradient written by the
        forward for grad_output = 1; backward rescales in place only if grad_output != 1);
    wider rows: 2 reads + 1 write (online log-sum-exp, then the gradient pass);
    'none': forward 1 read; backward 1 read + 1 write (per-row grad_output, from the saved lse);
    no grad needed: 1 read.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.ops._layout import result_dtype
from crossent.triton._common import is_tracing, total_target_weight
from crossent.triton._cross_entropy_kernels import (
    STATS,
    CrossEntropyOptions,
    gradient_from_statistics,
    row_statistics,
)
from crossent.triton._scale import scale_


def _out_dtype(x: Tensor, target: Tensor, weight: Tensor | None, prob: bool) -> torch.dtype:
    if not prob:
        return x.dtype
    return result_dtype(x.dtype, target.dtype, *((weight.dtype,) if weight is not None else ()))


def _forward(
    x: Tensor, target: Tensor, weight: Tensor | None, opts: CrossEntropyOptions, grad: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, stats, G) of the (N, C, S) logits; ``grad`` receives d(loss)/dx for grad_output = 1."""
    # The class dim may be empty (C = 0): then every index target is ignored, and a probability
    # row is -sum over nothing = -0.
    acc = acc_dtype(x.dtype, *((target.dtype,) if opts.prob else ()), *((weight.dtype,) if weight is not None else ()))
    N, C, S = x.shape
    rows = N * S
    # G = d(loss)/d(row loss): 1/W for an index 'mean' (W = sum of kept target weights, reduced
    # on the device: no host synchronisation), 1/P for a probability 'mean', else 1.
    total_weight = None
    if opts.reduction == "mean" and not opts.prob:
        total_weight = total_target_weight(target, weight, opts.ignore_index, acc)
        scale = torch.reciprocal(total_weight)
    elif opts.reduction == "mean":
        scale = torch.full((), 1.0 / rows if rows else math.inf, dtype=acc, device=x.device)
    else:
        scale = torch.ones((), dtype=acc, device=x.device)
    if C == 0 or rows == 0:
        loss_rows = torch.full((rows,), -0.0 if opts.prob else 0.0, dtype=acc, device=x.device)
        stats = torch.zeros(rows, STATS, dtype=acc, device=x.device)
        if grad is not None:
            grad.zero_()
    else:
        loss_rows, stats = row_statistics(x, target, weight, opts, grad=grad, scale=scale)
    loss = _reduce(loss_rows, stats, opts, C, rows, total_weight)
    return loss.to(_out_dtype(x, target, weight, opts.prob)), stats, scale


def _reduce(
    loss_rows: Tensor, stats: Tensor, opts: CrossEntropyOptions, C: int, rows: int, total_weight: Tensor | None
) -> Tensor:
    """Reduce the per-row losses the way torch does: smoothing reduces its two terms separately."""
    if opts.reduction == "none":
        return loss_rows
    if opts.smooth and not opts.prob:
        # (1 - eps) sum nll / W + (eps / C) sum smooth / W: a zero W gives NaN as in torch.
        nll, smooth = stats[:, 3].sum(), stats[:, 4].sum()
        if total_weight is not None:
            nll, smooth = nll / total_weight, smooth / total_weight
        return (1.0 - opts.label_smoothing) * nll + (opts.label_smoothing / C) * smooth
    total = loss_rows.sum()
    if opts.reduction == "sum":
        return total
    if total_weight is not None:
        return total / total_weight
    # torch divides by numel(input) / C positions, which is 0 / 0 when the class dim is empty.
    return total / rows if C > 0 else total * math.nan


def _options(
    ignore_index: int, label_smoothing: float, reduction: str, x: Tensor, target: Tensor
) -> CrossEntropyOptions:
    return CrossEntropyOptions(ignore_index, label_smoothing, reduction, prob=x.shape == target.shape)


@torch.library.custom_op("crossent_triton::cross_entropy", mutates_args=())
def cross_entropy_op(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    reduction: str,
    with_grad: bool,
    inplace_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, stats, G, grad) of the (N, C, S) logits; ``grad`` is empty unless ``with_grad``."""
    opts = _options(ignore_index, label_smoothing, reduction, x, target)
    grad = torch.empty_like(x) if with_grad else x.new_empty(0)
    loss, stats, scale = _forward(x, target, weight, opts, grad if with_grad else None)
    return loss, stats, scale, grad


@torch.library.custom_op("crossent_triton::cross_entropy_inplace", mutates_args=("x",))
def cross_entropy_inplace_op(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    reduction: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, stats, G); overwrites the logits ``x`` with d(loss)/dx for grad_output = 1."""
    opts = _options(ignore_index, label_smoothing, reduction, x, target)
    return _forward(x, target, weight, opts, x)


def _fake_outputs(x: Tensor, target: Tensor, weight: Tensor | None, reduction: str) -> tuple[Tensor, Tensor, Tensor]:
    prob = x.shape == target.shape
    N, _, S = x.shape
    acc = acc_dtype(x.dtype, *((target.dtype,) if prob else ()), *((weight.dtype,) if weight is not None else ()))
    out = _out_dtype(x, target, weight, prob)
    loss = x.new_empty((N * S,) if reduction == "none" else (), dtype=out)
    return loss, x.new_empty((N * S, STATS), dtype=acc), x.new_empty((), dtype=acc)


@cross_entropy_op.register_fake
def _cross_entropy_fake(x, target, weight, ignore_index, label_smoothing, reduction, with_grad, inplace_backward):
    loss, stats, scale = _fake_outputs(x, target, weight, reduction)
    return loss, stats, scale, torch.empty_like(x) if with_grad else x.new_empty(0)


@cross_entropy_inplace_op.register_fake
def _cross_entropy_inplace_fake(x, target, weight, ignore_index, label_smoothing, reduction):
    return _fake_outputs(x, target, weight, reduction)


@torch.library.custom_op("crossent_triton::cross_entropy_backward", mutates_args=())
def cross_entropy_backward_op(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    stats: Tensor,
    scale: Tensor,
    ignore_index: int,
    label_smoothing: float,
    want_input_grad: bool,
    want_target_grad: bool,
) -> tuple[Tensor, Tensor]:
    """(dx, dt) from the saved statistics; ``scale`` is 0-d or one factor per row. Unwanted ones are empty."""
    opts = _options(ignore_index, label_smoothing, "none", x, target)
    dx = torch.empty_like(x) if want_input_grad else x.new_empty(0)
    dt = torch.empty_like(target) if want_target_grad else target.new_empty(0)
    if x.numel() > 0 and (want_input_grad or want_target_grad):
        gradient_from_statistics(
            x, target, weight, opts, stats, scale,
            grad=dx if want_input_grad else None, grad_target=dt if want_target_grad else None,
        )  # fmt: skip
    return dx, dt


@cross_entropy_backward_op.register_fake
def _cross_entropy_backward_fake(
    x, target, weight, stats, scale, ignore_index, label_smoothing, want_input_grad, want_target_grad
):  # noqa: E501
    dx = torch.empty_like(x) if want_input_grad else x.new_empty(0)
    return dx, torch.empty_like(target) if want_target_grad else target.new_empty(0)


@torch.library.custom_op("crossent_triton::cross_entropy_backward_inplace", mutates_args=("x",))
def cross_entropy_backward_inplace_op(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    stats: Tensor,
    scale: Tensor,
    ignore_index: int,
    label_smoothing: float,
) -> None:
    """Overwrite the logits ``x`` with dx (``inplace_backward=True`` with reduction 'none')."""
    opts = _options(ignore_index, label_smoothing, "none", x, target)
    if x.numel() > 0:
        gradient_from_statistics(x, target, weight, opts, stats, scale, grad=x)


@cross_entropy_backward_inplace_op.register_fake
def _cross_entropy_backward_inplace_fake(x, target, weight, stats, scale, ignore_index, label_smoothing):  # noqa: E501
    return None


# ---------------------------------------------------------------------------------------------
# Autograd. The gradient written by the forward is kept as a plain (detached) context attribute
# so that backward can rescale it in place and hand it over exactly once; a second backward
# through a retained graph recomputes from the saved logits instead. Under torch.compile the
# buffer is saved normally and scaled out of place (traced graphs cannot consume state).
# ---------------------------------------------------------------------------------------------


def _setup_context(ctx, inputs, output, *, inplace: bool) -> None:
    x, target, weight, ignore_index, label_smoothing, reduction = inputs[:6]
    loss, stats, scale = output[:3]
    with_grad = inplace or bool(inputs[6])
    ctx.opts = _options(ignore_index, label_smoothing, reduction, x, target)
    ctx.inplace = inplace or bool(inputs[7])
    ctx.fused = with_grad
    ctx.traced = is_tracing(x, loss)
    ctx.logits_overwritten = False
    ctx.buffer_is_logits = inplace
    ctx.mark_non_differentiable(*output[1:])
    fused = x if inplace else output[3]
    ctx.grad_buffer = fused.detach() if with_grad and not ctx.traced else None
    saved_x = None if inplace else x
    if with_grad and ctx.traced:
        ctx.save_for_backward(saved_x, target, weight, stats, scale, fused)
    else:
        ctx.save_for_backward(saved_x, target, weight, stats, scale)


def _fused_gradient(ctx, grad_loss: Tensor, traced_grad: list[Tensor]) -> Tensor | None:
    """The gradient the forward wrote, times grad_output; None once it has been handed over."""
    if ctx.traced:
        return (traced_grad[0] * grad_loss).to(traced_grad[0].dtype)
    if ctx.grad_buffer is None:
        return None
    dx, ctx.grad_buffer = ctx.grad_buffer, None
    ctx.logits_overwritten = ctx.buffer_is_logits
    scale_(dx, grad_loss)
    return dx


def _backward(ctx, grad_loss, *_unused):
    if torch.is_grad_enabled():
        raise RuntimeError(
            "crossent's Triton cross_entropy has no double backward; use impl='torch' for create_graph=True"
        )
    if ctx.logits_overwritten:
        raise RuntimeError(
            "crossent's Triton cross_entropy with inplace_backward=True overwrote the logits with their "
            "gradient; backward through this graph a second time needs inplace_backward=False"
        )
    x, target, weight, stats, scale, *traced_grad = ctx.saved_tensors
    opts: CrossEntropyOptions = ctx.opts
    need_dx, need_dt = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx = _fused_gradient(ctx, grad_loss, traced_grad) if need_dx and ctx.fused else None
    dt = None
    if (need_dx and dx is None) or need_dt:
        # Recompute from the saved logits and statistics ('none', target gradients, or a retained graph).
        row_scale = grad_loss.reshape(-1).contiguous() if opts.reduction == "none" else scale * grad_loss
        if need_dx and dx is None and ctx.inplace and not ctx.traced:
            cross_entropy_backward_inplace_op(
                x, target, weight, stats, row_scale, opts.ignore_index, opts.label_smoothing
            )
            ctx.logits_overwritten = True
            dx = x
        if (need_dx and dx is None) or need_dt:
            dx_new, dt_new = cross_entropy_backward_op(
                x, target, weight, stats, row_scale, opts.ignore_index, opts.label_smoothing,
                need_dx and dx is None, need_dt,
            )  # fmt: skip
            dx = dx_new if dx is None and need_dx else dx
            dt = dt_new if need_dt else None
    return dx, dt, None, None, None, None, *((None, None) if not ctx.inplace_op else ())


def _setup_functional(ctx, inputs, output) -> None:
    ctx.inplace_op = False
    _setup_context(ctx, inputs, output, inplace=False)


def _setup_inplace(ctx, inputs, output) -> None:
    ctx.inplace_op = True
    _setup_context(ctx, inputs, output, inplace=True)


cross_entropy_op.register_autograd(_backward, setup_context=_setup_functional)


class _InplaceCrossEntropy(torch.autograd.Function):
    """Autograd for the in-place op (torch.library only differentiates functional ops; eager only)."""

    @staticmethod
    def forward(x, target, weight, ignore_index, label_smoothing, reduction):
        return cross_entropy_inplace_op(x, target, weight, ignore_index, label_smoothing, reduction)

    setup_context = staticmethod(_setup_inplace)
    backward = staticmethod(_backward)


# ---------------------------------------------------------------------------------------------
# Entry point for crossent.functional (inputs already validated and normalised).
# ---------------------------------------------------------------------------------------------


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    inplace_backward: bool,
) -> Tensor:
    """Cross-entropy of logits against class indices or class probabilities, on Triton kernels.

    Same values and gradients as ``torch.nn.functional.cross_entropy``. Unreduced, per position n:

        index targets:  l_n = (1 - eps) w_{y_n} (lse_n - x_{n,y_n}) + (eps / C) sum_c w_c (lse_n - x_{n,c}),
                        and l_n = 0 where y_n == ignore_index;
        prob targets:   l_n = sum_c w_c q_{n,c} (lse_n - x_{n,c}),  q = (1 - eps) t + eps / C.

    'sum' adds the l_n; 'mean' divides by sum_n w_{y_n} over kept positions (index targets; NaN
    when every target is ignored) or by the number of positions (probability targets).

    ``inplace_backward=True`` writes the gradient into ``input``'s memory (non-leaf inputs that
    require grad, outside torch.compile), so no gradient buffer is allocated; ``input`` then holds
    the gradient, not the logits. Autograd's version counter still guards other users of it.

    Shape:
        - input: (C), (N, C) or (N, C, d_1, ..., d_K), float16/bfloat16/float32/float64
        - target: () / (N) / (N, d_1, ..., d_K) int64, or the input's shape (probabilities)
        - output: () for 'mean'/'sum', else the target's shape without the class dim

    Example:
        >>> import torch
        >>> from crossent.triton import cross_entropy
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> logits = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]], device=device, requires_grad=True)
        >>> loss = cross_entropy(logits, torch.tensor([0, 1, 1], device=device), None, -100, "mean", 0.0, False)
        >>> round(loss.item(), 4)
        0.5224
        >>> loss.backward()
    """
    prob = input.shape == target.shape
    if prob and weight is not None and weight.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError(
            "crossent's Triton cross_entropy does not differentiate the class weight; use impl='torch'"
        )
    if input.dim() == 1:
        C, N, S = input.shape[0], 1, 1
        out_shape: tuple[int, ...] = ()
    else:
        N, C = input.shape[0], input.shape[1]
        S = math.prod(input.shape[2:])
        out_shape = (input.shape[0], *input.shape[2:])
    x = input.reshape(N, C, S)
    t = target.reshape(N, C, S) if prob else target.reshape(N * S)
    eps = label_smoothing if label_smoothing > 0.0 else 0.0
    with_grad = torch.is_grad_enabled() and input.requires_grad and reduction != "none"
    # In place needs a non-leaf input whose logits are not needed again by this op (target grad).
    in_place = (
        inplace_backward
        and not is_tracing(input)
        and input.requires_grad
        and input.grad_fn is not None
        and not (prob and target.requires_grad)
    )
    if with_grad and in_place:
        loss = _InplaceCrossEntropy.apply(x, t, weight, ignore_index, eps, reduction)[0]
    else:
        loss = cross_entropy_op(x, t, weight, ignore_index, eps, reduction, with_grad, in_place)[0]
    return loss.reshape(out_shape) if reduction == "none" else loss
