"""Class-dimension layout, dtypes, and cache-sized blocks for the row kernels.

Every class-dim input is viewed as ``(N, C, S)``: batch, classes, and the flattened spatial
positions ``d1 * ... * dK`` (``S = 1`` for ``(N, C)``; an unbatched ``(C,)`` is ``(1, C, 1)``).
For contiguous inputs this is a view, so gradients and in-place writes land in the caller's layout.
Kernels then walk the tensor in blocks ``x3[n0:n1, :, s0:s1]`` of about ``block_elements(device)``
values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

Block = tuple[slice, slice]

# a block's working set: its values in float32, their exponentials, and the gradient written from them
WORKING_SET_BYTES_PER_ELEMENT = 12
_DEFAULT_CACHE_BYTES = 2 << 20
# on accelerators nothing is reused between ops from a cache: blocks only bound the temporaries
_ACCELERATOR_BLOCK = 1 << 26


def _cpu_count(cpu_list: str) -> int:
    """The number of CPUs in a sysfs list such as ``0-3,8``."""
    count = 0
    for part in cpu_list.strip().split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def cache_bytes_per_core(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The cache one core can count on, as the CPU reports it: the larger of its own L2 and its share of L3.

    Read from Linux's sysfs; ``_DEFAULT_CACHE_BYTES`` where that is unavailable.
    """
    best = 0
    for index in root.glob("index*"):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            sharing = _cpu_count((index / "shared_cpu_list").read_text())
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
            size_bytes = int(size.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
        if level >= 2 and kind != "Instruction":
            best = max(best, size_bytes // max(sharing, 1))
    return best or _DEFAULT_CACHE_BYTES


# a fixed block size instead, for tests that walk many small blocks
BLOCK_ELEMENTS: int | None = None


_CACHE_BYTES = cache_bytes_per_core()


def block_elements(device: torch.device, working_set: int = WORKING_SET_BYTES_PER_ELEMENT) -> int:
    """Values per block: on CPUs, a block's working set (``working_set`` bytes per value) fits the cache
    of one core."""
    if BLOCK_ELEMENTS is not None:
        return BLOCK_ELEMENTS
    if device.type != "cpu":
        return _ACCELERATOR_BLOCK
    return min(max(_CACHE_BYTES // working_set, 1 << 16), 1 << 22)


def class_dim(x: torch.Tensor) -> int:
    return 0 if x.dim() == 1 else 1


def as_ncs(x: torch.Tensor) -> torch.Tensor:
    """View ``(C,)``, ``(N, C)`` or ``(N, C, d1..dK)`` as ``(N, C, S)``."""
    if x.dim() == 1:
        return x.reshape(1, x.shape[0], 1)
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` as contiguous rows ``(-1, x.shape[dim])`` when every dim after ``dim`` is 1 (a view when
    ``x`` is contiguous): what the native kernels read; a 0-d tensor is one row of one value."""
    return x.contiguous().view(-1, x.shape[dim] if x.dim() else 1)


def output_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The shape of a class-dim loss's ``'none'`` output: ``x``'s without the class dim."""
    return () if x.dim() == 1 else (x.shape[0], *x.shape[2:])


def blocks(
    n: int, c: int, s: int, device: torch.device, working_set: int = WORKING_SET_BYTES_PER_ELEMENT
) -> Iterator[Block]:
    """Row-major blocks over ``(N, S)`` covering about ``block_elements`` values of ``(N, C, S)`` each."""
    positions = max(block_elements(device, working_set) // max(c, 1), 1)
    if s >= positions:
        for n0 in range(n):
            for s0 in range(0, s, positions):
                yield slice(n0, n0 + 1), slice(s0, min(s0 + positions, s))
    else:
        rows = max(positions // max(s, 1), 1)
        for n0 in range(0, n, rows):
            yield slice(n0, min(n0 + rows, n)), slice(0, s)


def row_blocks(shape: torch.Size, device: torch.device) -> Iterator[slice]:
    """Slices along dim 0 of a tensor of ``shape`` (at least 1-d) covering about ``block_elements`` each."""
    rows = shape[0]
    step = max(block_elements(device) // max(math.prod(shape[1:]), 1), 1)
    for r0 in range(0, rows, step):
        yield slice(r0, min(r0 + step, rows))


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 when any input is float64, else float32: half precisions accumulate in float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def result_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype of a loss computed from tensors of ``dtypes``: torch's type promotion of all of them."""
    out = dtypes[0]
    for dt in dtypes[1:]:
        out = torch.promote_types(out, dt)
    return out
