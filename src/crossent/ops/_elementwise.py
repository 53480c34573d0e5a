"""Drivers for element-wise losses: evaluate a per-element formula block by block along dim 0.

Intermediates (logs, sigmoids, products) live only for one cache-sized block, so a ``'mean'`` or
``'sum'`` forward allocates nothing of the input's size, and a backward allocates only the gradients.
Broadcast operands (weights, ``pos_weight``, a broadcast KL target) are expanded views, never copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from crossent._reduction import reduce
from crossent.ops._layout import row_blocks

Operand = torch.Tensor | None


def repeats(operand: torch.Tensor | None, shape: torch.Size) -> bool:
    """Whether ``operand`` broadcast to ``shape`` repeats itself every ``operand.numel()`` elements:
    after its leading 1s it is ``shape``'s trailing dims (or it is absent), as the native kernels take it."""
    if operand is None:
        return True
    dims = list(operand.shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    return tuple(dims) == tuple(shape[len(shape) - len(dims) :]) if dims else True


def _native_weight(operand: Operand) -> Operand:
    """A weight as the native kernels take it: contiguous float32, repeating every ``numel`` elements."""
    return None if operand is None else operand.detach().to(torch.float32).contiguous().reshape(-1)


def native_loss(
    op: str,
    reduction: str,
    out_dtype: torch.dtype,
    divisor: int,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: Operand = None,
    pos_weight: Operand = None,
    *,
    log_target: bool = False,
) -> torch.Tensor:
    """The native forward: the loss per element (``'none'``), or its sum, divided for a mean."""
    from crossent.native import kernels

    per_element = reduction == "none"
    w, pw = _native_weight(weight), _native_weight(pos_weight)
    out = kernels.elementwise_loss(op, x.contiguous(), y.contiguous(), w, pw, log_target, per_element)
    if per_element:
        return out.view(x.shape)
    return reduce(out, "sum" if reduction == "sum" else "mean", divisor).to(out_dtype)


def native_grads(
    op: str,
    g: torch.Tensor,
    needs: Sequence[bool],
    x: torch.Tensor,
    y: torch.Tensor,
    weight: Operand = None,
    pos_weight: Operand = None,
    *,
    log_target: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The native backward: the gradients of x and y that ``needs`` asks for, for the upstream ``g``
    (0-dim float32, or per element in x's dtype)."""
    from crossent.native import kernels

    w, pw = _native_weight(weight), _native_weight(pos_weight)
    g = g if g.dim() == 0 else g.contiguous()
    gx, gy = kernels.elementwise_grad(op, x.contiguous(), y.contiguous(), w, pw, log_target, g, *needs)
    return (gx.view(x.shape) if needs[0] else None), (gy.view(y.shape) if needs[1] else None)


def _expanded(shape: torch.Size, operands: Sequence[Operand]) -> list[Operand]:
    return [torch.atleast_1d(o.expand(shape)) if o is not None else None for o in operands]


def _block(operands: Sequence[Operand], rows: slice) -> list[Operand]:
    return [o[rows] if o is not None else None for o in operands]


def reduce_blocks(
    shape: torch.Size,
    reduction: str,
    out_dtype: torch.dtype,
    acc: torch.dtype,
    per_element: Callable[..., torch.Tensor],
    *operands: Operand,
    divisor: int | None = None,
) -> torch.Tensor:
    """``reduction`` of ``per_element(*operand_blocks)`` over a tensor of ``shape``; sums in ``acc``.

    ``'mean'`` and ``'batchmean'`` divide the sum by ``divisor`` (by default the number of elements).
    """
    expanded = _expanded(shape, operands)
    shape1 = torch.atleast_1d(torch.empty(shape, device="meta")).shape
    device = next(o.device for o in operands if o is not None)
    if reduction == "none":
        out = torch.empty(shape1, dtype=out_dtype, device=device)

        def write(rows: slice) -> None:
            out[rows] = per_element(*_block(expanded, rows))

        for rows in row_blocks(shape1, device):
            write(rows)
        return out.reshape(shape)
    partials = [per_element(*_block(expanded, rows)).sum() for rows in row_blocks(shape1, device)]
    # block sums added in block order: the same result on any number of threads
    total = torch.zeros((), dtype=acc, device=device)
    for partial in partials:
        total += partial
    if reduction in ("mean", "batchmean"):
        total = total / (shape.numel() if divisor is None else divisor)
    return total.to(out_dtype)


def grad_blocks(
    shape: torch.Size,
    wanted: Sequence[tuple[torch.Size, torch.dtype] | None],
    per_element: Callable[..., Sequence[torch.Tensor | None]],
    *operands: Operand,
) -> list[torch.Tensor | None]:
    """Gradients ``per_element(*operand_blocks)`` for each wanted ``(shape, dtype)``, written block by block.

    A wanted gradient whose shape is smaller than ``shape`` (a broadcast input) is summed back to it.
    """
    expanded = _expanded(shape, operands)
    shape1 = torch.atleast_1d(torch.empty(shape, device="meta")).shape
    device = next(o.device for o in operands if o is not None)
    outs = [torch.empty(shape1, dtype=w[1], device=device) if w is not None else None for w in wanted]

    def write(rows: slice) -> None:
        for out, grad in zip(outs, per_element(*_block(expanded, rows)), strict=True):
            if out is not None and grad is not None:
                out[rows] = grad

    for rows in row_blocks(shape1, device):
        write(rows)
    return [
        out.reshape(shape).sum_to_size(w[0]) if out is not None and w is not None else None
        for out, w in zip(outs, wanted, strict=True)
    ]
