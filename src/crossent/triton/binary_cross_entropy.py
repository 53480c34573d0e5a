"""Triton ``binary_cross_entropy_with_logits`` and ``binary_cross_entropy``, forward and backward.

Element-wise: the forward reads input and target once and writes either the unreduced loss or
one partial sum per program; the backward reads them again and writes the gradients.

Identities (s = sigmoid(x), lw = 1 + (pw - 1) t, G = grad_output / numel for 'mean'):
    with logits:  l = w [(1 - t) x - lw log s]
                  dx = G w (lw s - pw t),  dt = G w (-x - (pw - 1) log s)
    probabilities: l = -w [t max(log x, -100) + (1 - t) max(log(1 - x), -100)]
                  dx = G w (x - t) / max(x (1 - x), 1e-12),  dt = G w (log(1 - x) - log x)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.triton._common import launch, log1p, log_sigmoid, tl_dtype
from crossent.triton._elementwise import Broadcast, broadcast_operand, element_grid, reduce_partials


@triton.jit
def _bce_forward_kernel(
    x_ptr, t_ptr, w_ptr, w_div, w_mod, pw_ptr, pw_div, pw_mod, out_ptr, numel,
    LOGITS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_POS_WEIGHT: tl.constexpr,
    REDUCE: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.5).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    if LOGITS:
        if HAS_POS_WEIGHT:
            pw = tl.load(pw_ptr + (offs // pw_div) % pw_mod, mask=mask, other=1.0).to(ACC)
            loss = (1.0 - t) * x - ((pw - 1.0) * t + 1.0) * log_sigmoid(x)
        else:
            loss = (1.0 - t) * x - log_sigmoid(x)
    else:
        # Each log is clamped at -100 before the product, so 0 * log(0) never appears.
        log_x = tl.maximum(tl.log(x), -100.0)
        log_1mx = tl.maximum(log1p(-x), -100.0)
        loss = (t - 1.0) * log_1mx - t * log_x
    if HAS_WEIGHT:
        loss = loss * tl.load(w_ptr + (offs // w_div) % w_mod, mask=mask, other=0.0).to(ACC)
    if REDUCE:
        tl.store(out_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), 0))
    else:
        tl.store(out_ptr + offs, loss, mask=mask)


@triton.jit
def _bce_backward_kernel(
    x_ptr, t_ptr, w_ptr, w_div, w_mod, pw_ptr, pw_div, pw_mod, g_ptr, dx_ptr, dt_ptr, numel,
    LOGITS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_POS_WEIGHT: tl.constexpr,
    ELEMENT_SCALE: tl.constexpr, WRITE_DX: tl.constexpr, WRITE_DT: tl.constexpr,
    BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.5).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(ACC)
    if ELEMENT_SCALE:
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    else:
        g = tl.load(g_ptr).to(ACC)
    if HAS_WEIGHT:
        g = g * tl.load(w_ptr + (offs // w_div) % w_mod, mask=mask, other=0.0).to(ACC)
    if LOGITS:
        if HAS_POS_WEIGHT:
            pw = tl.load(pw_ptr + (offs // pw_div) % pw_mod, mask=mask, other=1.0).to(ACC)
        else:
            pw = 1.0
        if WRITE_DX:
            sig = 1.0 / (1.0 + tl.exp(-x))
            tl.store(dx_ptr + offs, g * (((pw - 1.0) * t + 1.0) * sig - pw * t), mask=mask)
        if WRITE_DT:
            if HAS_POS_WEIGHT:
                dt = -x - (pw - 1.0) * log_sigmoid(x)
            else:
                dt = -x
            tl.store(dt_ptr + offs, g * dt, mask=mask)
    else:
        if WRITE_DX:
            # torch's float32 EPSILON = 1e-12, also when the input is float64.
            eps = tl.full((), 1e-12, tl.float32).to(ACC)
            tl.store(dx_ptr + offs, g * (x - t) / tl.maximum(x * (1.0 - x), eps), mask=mask)
        if WRITE_DT:
            tl.store(dt_ptr + offs, g * (log1p(-x) - tl.log(x)), mask=mask)


def _operands(
    x: Tensor, weight: Tensor | None, pos_weight: Tensor | None
) -> tuple[Broadcast | None, Broadcast | None, dict[str, object]]:
    shape = tuple(x.shape)
    w = broadcast_operand(weight, shape) if weight is not None else None
    pw = broadcast_operand(pos_weight, shape) if pos_weight is not None else None
    args: dict[str, object] = dict(
        w_ptr=w.values if w is not None else x, w_div=w.div if w else 1, w_mod=w.mod if w else 1,
        pw_ptr=pw.values if pw is not None else x, pw_div=pw.div if pw else 1, pw_mod=pw.mod if pw else 1,
        HAS_WEIGHT=w is not None, HAS_POS_WEIGHT=pw is not None,
    )  # fmt: skip
    return w, pw, args


def _acc(x: Tensor, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None) -> torch.dtype:
    return acc_dtype(*(t.dtype for t in (x, target, weight, pos_weight) if t is not None))


def _out_dtype(x: Tensor, target: Tensor, logits: bool) -> torch.dtype:
    return target.dtype if logits else x.dtype


def _forward(
    x: Tensor, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None, reduction: str, logits: bool
) -> Tensor:
    xc, tc = x.contiguous(), target.contiguous()
    numel = xc.numel()
    acc = _acc(x, target, weight, pos_weight)
    _w, _pw, args = _operands(xc, weight, pos_weight)
    block, grid = element_grid(numel, x.device)
    reduce = reduction != "none"
    out = torch.empty(grid[0] if reduce else numel, dtype=acc, device=x.device)
    launch(
        _bce_forward_kernel, grid, x_ptr=xc, t_ptr=tc, **args, out_ptr=out, numel=numel,
        LOGITS=logits, REDUCE=reduce, BLOCK=block, ACC=tl_dtype(acc),
    )  # fmt: skip
    loss = reduce_partials(out, reduction, numel) if reduce else out.reshape(x.shape)
    return loss.to(_out_dtype(x, target, logits))


def _backward_launch(
    grad: Tensor,
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    logits: bool,
    want_input_grad: bool,
    want_target_grad: bool,
) -> tuple[Tensor, Tensor]:
    xc, tc = x.contiguous(), target.contiguous()
    numel = xc.numel()
    acc = _acc(x, target, weight, pos_weight)
    _w, _pw, args = _operands(xc, weight, pos_weight)
    # 'mean' folds 1/numel into the scale; 'none' reads one grad_output per element.
    scale = grad.contiguous() if reduction == "none" else (grad.to(acc) / numel if reduction == "mean" else grad)
    dx = torch.empty_like(xc) if want_input_grad else x.new_empty(0)
    dt = torch.empty_like(tc) if want_target_grad else target.new_empty(0)
    block, grid = element_grid(numel, x.device)
    launch(
        _bce_backward_kernel, grid, x_ptr=xc, t_ptr=tc, **args, g_ptr=scale, dx_ptr=dx, dt_ptr=dt,
        numel=numel, LOGITS=logits, ELEMENT_SCALE=reduction == "none", WRITE_DX=want_input_grad,
        WRITE_DT=want_target_grad, BLOCK=block, ACC=tl_dtype(acc),
    )  # fmt: skip
    return dx.reshape(x.shape) if want_input_grad else dx, dt.reshape(target.shape) if want_target_grad else dt


@torch.library.custom_op("crossent_triton::binary_cross_entropy_with_logits", mutates_args=())
def bce_with_logits_op(
    x: Tensor, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None, reduction: str
) -> Tensor:
    """Loss of logits ``x`` against ``target`` (same shape); output in the target's dtype."""
    return _forward(x, target, weight, pos_weight, reduction, logits=True)


@torch.library.custom_op("crossent_triton::binary_cross_entropy", mutates_args=())
def bce_op(x: Tensor, target: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """Loss of probabilities ``x`` against ``target`` (same shape and dtype)."""
    return _forward(x, target, weight, None, reduction, logits=False)


@torch.library.custom_op("crossent_triton::binary_cross_entropy_backward", mutates_args=())
def bce_backward_op(
    grad: Tensor,
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    logits: bool,
    want_input_grad: bool,
    want_target_grad: bool,
) -> tuple[Tensor, Tensor]:
    """(dx, dt) of either BCE flavour; an unwanted gradient comes back empty."""
    return _backward_launch(grad, x, target, weight, pos_weight, reduction, logits, want_input_grad, want_target_grad)


def _fake_loss(x: Tensor, target: Tensor, reduction: str, logits: bool) -> Tensor:
    dtype = _out_dtype(x, target, logits)
    return x.new_empty(() if reduction != "none" else x.shape, dtype=dtype)


@bce_with_logits_op.register_fake
def _bce_with_logits_fake(x, target, weight, pos_weight, reduction):
    return _fake_loss(x, target, reduction, True)


@bce_op.register_fake
def _bce_fake(x, target, weight, reduction):
    return _fake_loss(x, target, reduction, False)


@bce_backward_op.register_fake
def _bce_backward_fake(grad, x, target, weight, pos_weight, reduction, logits, want_input_grad, want_target_grad):  # noqa: E501
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if want_input_grad else x.new_empty(0)
    dt = torch.empty_like(target, memory_format=torch.contiguous_format) if want_target_grad else target.new_empty(0)
    return dx, dt


def _setup_logits(ctx, inputs, output) -> None:
    x, target, weight, pos_weight, reduction = inputs
    ctx.reduction, ctx.logits = reduction, True
    ctx.save_for_backward(x, target, weight, pos_weight)


def _setup_probabilities(ctx, inputs, output) -> None:
    x, target, weight, reduction = inputs
    ctx.reduction, ctx.logits = reduction, False
    ctx.save_for_backward(x, target, weight, None)


def _backward(ctx, grad):
    if torch.is_grad_enabled():
        raise RuntimeError("crossent's Triton binary cross-entropy has no double backward; use impl='torch'")
    x, target, weight, pos_weight = ctx.saved_tensors
    want_dx, want_dt = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx, dt = bce_backward_op(grad, x, target, weight, pos_weight, ctx.reduction, ctx.logits, want_dx, want_dt)
    grads = (dx if want_dx else None, dt if want_dt else None, None, None)
    return grads + (None,) if ctx.logits else grads


bce_with_logits_op.register_autograd(_backward, setup_context=_setup_logits)
bce_op.register_autograd(_backward, setup_context=_setup_probabilities)


def _refuse_weight_grad(name: str, *tensors: Tensor | None) -> None:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise NotImplementedError(f"crossent's Triton {name} does not differentiate weights; use impl='torch'")


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Tensor | None, reduction: str, pos_weight: Tensor | None
) -> Tensor:
    """Binary cross-entropy on logits, on Triton kernels (log-sigmoid form, stable for any x).

    Unreduced: l = w [(1 - t) x - (1 + (pw - 1) t) log sigmoid(x)] per element (pw = pos_weight,
    broadcast along the trailing dims). 'mean' divides the sum by the number of elements (never
    by the weights), 'sum' adds. The result has the target's dtype, as in torch.

    Shape:
        - input: any shape, floating
        - target: the input's shape, floating
        - weight, pos_weight: broadcastable to the input's shape
        - output: () for 'mean'/'sum', else the input's shape

    Example:
        >>> import torch
        >>> from crossent.triton import binary_cross_entropy_with_logits
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> x = torch.tensor([[2.0, -1.0]], device=device, requires_grad=True)
        >>> loss = binary_cross_entropy_with_logits(x, torch.tensor([[1.0, 0.0]], device=device), None, "mean", None)
        >>> round(loss.item(), 4)
        0.2201
        >>> loss.backward()
    """
    _refuse_weight_grad("binary_cross_entropy_with_logits", weight, pos_weight)
    return bce_with_logits_op(input, target, weight, pos_weight, reduction)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """Binary cross-entropy on probabilities, on Triton kernels (each log clamped at -100 as torch does).

    Unreduced: l = -w [t max(log x, -100) + (1 - t) max(log(1 - x), -100)] per element; the
    gradient divides by max(x (1 - x), 1e-12). 'mean' divides the sum by the number of elements,
    'sum' adds. Inputs must already be range-checked (0 <= x, t <= 1).

    Shape:
        - input: any shape, floating; target: same shape and dtype; weight: broadcastable to it
        - output: () for 'mean'/'sum', else the input's shape

    Example:
        >>> import torch
        >>> from crossent.triton import binary_cross_entropy
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> p = torch.tensor([0.9, 0.2], device=device, requires_grad=True)
        >>> loss = binary_cross_entropy(p, torch.tensor([1.0, 0.0], device=device), None, "sum")
        >>> round(loss.item(), 4)
        0.3285
        >>> loss.backward()
    """
    _refuse_weight_grad("binary_cross_entropy", weight)
    return bce_op(input, target, weight, reduction)
