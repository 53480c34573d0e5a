"""Host-side helpers of the element-wise kernels (BCE, BCE with logits, KL divergence).

Element-wise kernels walk the flat, contiguous input. A broadcast operand (class weight,
pos_weight) is read as ``values[(i // div) % mod]`` for flat index i, which covers a scalar, a
trailing (C,) vector and a (C, 1, 1) channel vector without materialising the expansion.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
from torch import Tensor

from crossent.triton._common import tuning


@dataclasses.dataclass(frozen=True)
class Broadcast:
    """A tensor broadcast to a shape, addressed as ``values[(i // div) % mod]``."""

    values: Tensor
    div: int
    mod: int


def broadcast_operand(operand: Tensor, shape: tuple[int, ...]) -> Broadcast:
    """Address ``operand`` broadcast to ``shape``; copies only when its varying dims are not one contiguous run."""
    ndim = len(shape)
    while operand.dim() > ndim and operand.shape[0] == 1:
        operand = operand.squeeze(0)
    aligned = (1,) * (ndim - operand.dim()) + tuple(operand.shape)
    varying = [d for d in range(ndim) if aligned[d] != 1]
    if not varying:
        return Broadcast(operand.reshape(1).contiguous(), 1, 1)
    first, last = varying[0], varying[-1] + 1
    if all(aligned[d] == shape[d] for d in range(first, last)):
        mod = math.prod(shape[first:last])
        return Broadcast(operand.reshape(mod).contiguous(), math.prod(shape[last:]), mod)
    full = operand.expand(shape).contiguous().reshape(-1)
    return Broadcast(full, 1, max(full.numel(), 1))


def element_grid(numel: int, device: torch.device) -> tuple[int, tuple[int]]:
    """(block, grid) for an element-wise kernel over ``numel`` elements."""
    block = min(triton.next_power_of_2(max(numel, 1)), tuning(device).elementwise_block)
    return block, (triton.cdiv(numel, block),)


def reduce_partials(partials: Tensor, reduction: str, divisor: int) -> Tensor:
    """Sum of the per-program partial sums, divided by ``divisor`` unless reduction is 'sum'.

    The per-program sums are fixed by the grid, so the result is deterministic run to run.
    """
    total = partials.sum()
    return total if reduction == "sum" else total / divisor
