"""Binary cross-entropy on probabilities and on logits, element by element, in cache-sized blocks."""

from __future__ import annotations

from typing import Any

import torch

from crossent.ops._autograd import first_order
from crossent.ops._elementwise import grad_blocks, native_grads, native_loss, reduce_blocks
from crossent.ops._layout import accumulation_dtype

# torch clamps BCE's gradient denominator at 1e-12 stored as a float32 (9.999999960041972e-13 in float64)
_BCE_GRAD_EPS = float(torch.tensor(1e-12, dtype=torch.float32).item())


def _upstream(grad_output: torch.Tensor, reduction: str, numel: int, acc: torch.dtype) -> torch.Tensor:
    """The upstream gradient per element: ``g``, or ``g / numel`` for 'mean'."""
    g = grad_output.to(acc)
    return g / numel if reduction == "mean" else g


def _native_upstream(grad_output: torch.Tensor, reduction: str, numel: int) -> torch.Tensor:
    """The native kernels' upstream gradient: per element in the output dtype, or a float32 scalar."""
    return grad_output if reduction == "none" else _upstream(grad_output, reduction, numel, torch.float32)


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``: no overflow for any x."""
    return x.clamp(max=0) - x.abs().neg_().exp_().log1p_()


class BinaryCrossEntropy(torch.autograd.Function):
    """``l = -w [y max(log x, -100) + (1 - y) max(log(1 - x), -100)]``."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, reduction: str, native: bool
    ) -> torch.Tensor:
        ctx.reduction, ctx.native = reduction, native
        ctx.save_for_backward(x, y, weight)
        if native:
            return native_loss("binary_cross_entropy", reduction, x.dtype, x.numel(), x, y, weight)
        acc = accumulation_dtype(x.dtype)

        def loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
            xa, ya = x.to(acc), y.to(acc)
            # each log is clamped before it is multiplied, so 0 * log(0) never makes a NaN
            log_x = xa.log().clamp_(min=-100)
            log_1mx = xa.neg().log1p_().clamp_(min=-100)
            out = (ya * log_x).add_((1 - ya) * log_1mx).neg_()
            return out.mul_(w.to(acc)) if w is not None else out

        return reduce_blocks(x.shape, reduction, x.dtype, acc, loss, x, y, weight)

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        x, y, weight = ctx.saved_tensors
        acc = accumulation_dtype(x.dtype)
        need_x, need_y = ctx.needs_input_grad[:2]
        if ctx.native:
            g = _native_upstream(grad_output, ctx.reduction, x.numel())
            grad_x, grad_y = native_grads("binary_cross_entropy", g, (need_x, need_y), x, y, weight)
            return grad_x, grad_y, None, None, None

        def grads(
            g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None
        ) -> list[torch.Tensor | None]:
            # d/dx l = w (x - y) / max(x (1 - x), eps);  d/dy l = w (log(1 - x) - log x), unclamped
            xa, ya = x.to(acc), y.to(acc)
            gw = g * w.to(acc) if w is not None else g
            gx = gw * (xa - ya) / (xa * (1 - xa)).clamp_(min=_BCE_GRAD_EPS) if need_x else None
            gy = gw * (xa.neg().log1p_() - xa.log()) if need_y else None
            return [gx, gy]

        g = _upstream(grad_output, ctx.reduction, x.numel(), acc)
        wanted = [(x.shape, x.dtype) if need_x else None, (y.shape, y.dtype) if need_y else None]
        grad_x, grad_y = grad_blocks(x.shape, wanted, grads, g, x, y, weight)
        return grad_x, grad_y, None, None, None


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
        native: bool,
    ) -> torch.Tensor:
        ctx.reduction, ctx.native = reduction, native
        ctx.save_for_backward(x, y, weight, pos_weight)
        if native:
            return native_loss(
                "binary_cross_entropy_with_logits", reduction, y.dtype, x.numel(), x, y, weight, pos_weight
            )
        acc = accumulation_dtype(x.dtype, y.dtype)

        def loss(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, pw: torch.Tensor | None) -> torch.Tensor:
            xa, ya = x.to(acc), y.to(acc)
            log_sig = log_sigmoid(xa)
            if pw is not None:
                log_sig.mul_((pw.to(acc) - 1).mul_(ya).add_(1))
            out = (1 - ya).mul_(xa).sub_(log_sig)
            return out.mul_(w.to(acc)) if w is not None else out

        return reduce_blocks(x.shape, reduction, y.dtype, acc, loss, x, y, weight, pos_weight)

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None]:
        x, y, weight, pos_weight = ctx.saved_tensors
        acc = accumulation_dtype(x.dtype, y.dtype)
        need_x, need_y = ctx.needs_input_grad[:2]
        if ctx.native:
            g = _native_upstream(grad_output, ctx.reduction, x.numel())
            needs = (need_x, need_y)
            grad_x, grad_y = native_grads("binary_cross_entropy_with_logits", g, needs, x, y, weight, pos_weight)
            return grad_x, grad_y, None, None, None, None

        def grads(
            g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, pw: torch.Tensor | None
        ) -> list[torch.Tensor | None]:
            # d/dx l = w [(1 + (pw - 1) y) sigmoid(x) - pw y]
            # d/dy l = w [log sigmoid(-x) - pw log sigmoid(x)], which is -w x without pw
            xa, ya = x.to(acc), y.to(acc)
            gw = g * w.to(acc) if w is not None else g
            log_sig = log_sigmoid(xa)
            gx = gy = None
            if need_x:
                sig = log_sig.exp()
                d = sig - ya if pw is None else (pw.to(acc) - 1).mul(ya).add_(1).mul_(sig).sub_(pw.to(acc) * ya)
                gx = gw * d
            if need_y:
                d = xa.neg() if pw is None else log_sigmoid(-xa).sub_(pw.to(acc) * log_sig)
                gy = gw * d
            return [gx, gy]

        g = _upstream(grad_output, ctx.reduction, x.numel(), acc)
        wanted = [(x.shape, x.dtype) if need_x else None, (y.shape, y.dtype) if need_y else None]
        grad_x, grad_y = grad_blocks(x.shape, wanted, grads, g, x, y, weight, pos_weight)
        return grad_x, grad_y, None, None, None, None
