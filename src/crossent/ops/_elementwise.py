"""Drivers for element-wise losses: evaluate a per-element formula block by block along dim 0.

Intermediates (logs, sigmoids, products) live only for one cache-sized block, so a ``'mean'`` or
``'sum'`` forward allocates nothing of the input's size, and a backward allocates only the gradients.
Broadcast operands (weights, ``pos_weight``, a broadcast KL target) are expanded views, never copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from crossent.ops._layout import row_blocks

Operand = torch.Tensor | None


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
