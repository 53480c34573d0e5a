"""Binary cross-entropy on probabilities and on logits, element by element."""

from __future__ import annotations

from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype

# torch clamps BCE's gradient denominator at 1e-12 stored as a float32 (9.999999960041972e-13 in float64)
_BCE_GRAD_EPS = float(torch.tensor(1e-12, dtype=torch.float32).item())


def _scale(reduction: str, grad_output: torch.Tensor, numel: int, acc: torch.dtype) -> torch.Tensor:
    """The upstream gradient per element: g, or g / numel for 'mean'."""
    g = grad_output.to(acc)
    return g / numel if reduction == "mean" else g


def _reduce(loss: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    if reduction == "none":
        return loss.to(dtype)
    total = loss.sum()
    if reduction == "mean":
        total = total / loss.numel()
    return total.to(dtype)


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``: no overflow for any x."""
    return x.clamp(max=0) - x.abs().neg_().exp_().log1p_()


class BinaryCrossEntropy(torch.autograd.Function):
    """``l = -w [y max(log x, -100) + (1 - y) max(log(1 - x), -100)]``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, reduction: str
    ) -> torch.Tensor:
        acc = accumulation_dtype(x.dtype)
        xa, ya = x.to(acc), y.to(acc)
        # each log is clamped before it is multiplied, so 0 * log(0) never makes a NaN
        log_x = xa.log().clamp_(min=-100)
        log_1mx = xa.neg().log1p_().clamp_(min=-100)
        loss = (ya * log_x).add_((1 - ya) * log_1mx).neg_()
        if weight is not None:
            loss.mul_(weight.to(acc))
        ctx.reduction = reduction
        ctx.save_for_backward(x, y, weight)
        return _reduce(loss, reduction, x.dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        # d/dx l = w (x - y) / max(x (1 - x), eps);  d/dy l = w (log(1 - x) - log x), unclamped
        x, y, weight = ctx.saved_tensors
        acc = accumulation_dtype(x.dtype)
        xa, ya = x.to(acc), y.to(acc)
        g = _scale(ctx.reduction, grad_output, x.numel(), acc)
        if weight is not None:
            g = g * weight.to(acc)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = (g * (xa - ya) / (xa * (1 - xa)).clamp_(min=_BCE_GRAD_EPS)).to(x.dtype).expand(x.shape)
        if ctx.needs_input_grad[1]:
            grad_y = (g * (xa.neg().log1p_() - xa.log())).to(y.dtype).expand(y.shape)
        return grad_x, grad_y, None, None


class BinaryCrossEntropyWithLogits(torch.autograd.Function):
    """``l = w [(1 - y) x - (1 + (pw - 1) y) log sigmoid(x)]``; result in the target's dtype."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor | None,
        pos_weight: torch.Tensor | None,
        reduction: str,
    ) -> torch.Tensor:
        acc = accumulation_dtype(x.dtype, y.dtype)
        xa, ya = x.to(acc), y.to(acc)
        log_sig = log_sigmoid(xa)
        if pos_weight is None:
            loss = (1 - ya).mul_(xa).sub_(log_sig)
        else:
            loss = (1 - ya).mul_(xa).sub_((pos_weight.to(acc) - 1).mul(ya).add_(1).mul_(log_sig))
        if weight is not None:
            loss.mul_(weight.to(acc))
        ctx.reduction = reduction
        ctx.save_for_backward(x, y, weight, pos_weight)
        return _reduce(loss, reduction, y.dtype)

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        # d/dx l = w [(1 + (pw - 1) y) sigmoid(x) - pw y];  d/dy l = w [-x - (pw - 1) log sigmoid(x)]
        x, y, weight, pos_weight = ctx.saved_tensors
        acc = accumulation_dtype(x.dtype, y.dtype)
        xa, ya = x.to(acc), y.to(acc)
        g = _scale(ctx.reduction, grad_output, x.numel(), acc)
        if weight is not None:
            g = g * weight.to(acc)
        log_sig = log_sigmoid(xa)
        pw = pos_weight.to(acc) if pos_weight is not None else None
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            sig = log_sig.exp()
            d = sig - ya if pw is None else (pw - 1).mul(ya).add_(1).mul_(sig).sub_(pw * ya)
            grad_x = (g * d).to(x.dtype).expand(x.shape)
        if ctx.needs_input_grad[1]:
            d = xa.neg() if pw is None else xa.neg().sub_((pw - 1) * log_sig)
            grad_y = (g * d).to(y.dtype).expand(y.shape)
        return grad_x, grad_y, None, None, None
