"""Class-dimension layout and cache-sized blocks for the row kernels.

Every class-dim input is viewed as ``(N, C, S)``: batch, classes, and the flattened spatial
positions ``d1 * ... * dK`` (``S = 1`` for ``(N, C)``; an unbatched ``(C,)`` is ``(1, C, 1)``).
For contiguous inputs this is a view, so gradients and in-place writes land in the caller's layout.
Kernels then walk the tensor in blocks ``x3[n0:n1, :, s0:s1]`` of about ``BLOCK_ELEMENTS`` values,
small enough for the working set (block, its exponentials, the gradient) to stay in L2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

# 4 MiB of float32 per block (one worker thread each): measured fastest on a 2-core machine, few enough
# blocks that per-op dispatch overhead stays under ~5% for (4096, 32768) logits.
BLOCK_ELEMENTS = 1 << 20

Block = tuple[slice, slice]


def class_dim(x: torch.Tensor) -> int:
    return 0 if x.dim() == 1 else 1


def as_ncs(x: torch.Tensor) -> torch.Tensor:
    """View ``(C,)``, ``(N, C)`` or ``(N, C, d1..dK)`` as ``(N, C, S)``."""
    if x.dim() == 1:
        return x.reshape(1, x.shape[0], 1)
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def blocks(n: int, c: int, s: int) -> Iterator[Block]:
    """Row-major blocks over ``(N, S)`` covering about ``BLOCK_ELEMENTS`` values of ``(N, C, S)`` each."""
    positions = max(BLOCK_ELEMENTS // max(c, 1), 1)
    if s >= positions:
        for n0 in range(n):
            for s0 in range(0, s, positions):
                yield slice(n0, n0 + 1), slice(s0, min(s0 + positions, s))
    else:
        rows = max(positions // max(s, 1), 1)
        for n0 in range(0, n, rows):
            yield slice(n0, min(n0 + rows, n)), slice(0, s)


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 when any input is float64, else float32: half precisions accumulate in float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def row_blocks(shape: torch.Size) -> Iterator[slice]:
    """Slices along dim 0 of a tensor of ``shape`` (at least 1-d) covering about ``BLOCK_ELEMENTS`` each."""
    rows = shape[0]
    per_row = max(math.prod(shape[1:]), 1)
    step = max(BLOCK_ELEMENTS // per_row, 1)
    for r0 in range(0, rows, step):
        yield slice(r0, min(r0 + step, rows))
