"""Rows in chunks, and the projection that turns a chunk of hidden states into its logits."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class RowChunk:
    """A group of rows: a slice of every per-row tensor, or the row numbers of kept rows."""

    rows: slice | torch.Tensor

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """The chunk's rows of ``t`` (a view for a slice, a copy of ``len(rows)`` rows for an index)."""
        if isinstance(self.rows, slice):
            return t[self.rows]
        return t.index_select(0, self.rows)

    def put(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Write ``src`` into the chunk's rows of ``dst``."""
        if isinstance(self.rows, slice):
            dst[self.rows] = src
        else:
            dst.index_copy_(0, self.rows, src)


def row_chunks(n: int, kept_rows: torch.Tensor | None, chunk_rows: int) -> Iterator[RowChunk]:
    """Chunks of at most ``chunk_rows`` rows over all ``n`` rows, or over ``kept_rows`` only."""
    if kept_rows is None:
        for start in range(0, n, chunk_rows):
            yield RowChunk(slice(start, min(start + chunk_rows, n)))
    else:
        for start in range(0, kept_rows.shape[0], chunk_rows):
            yield RowChunk(kept_rows[start : start + chunk_rows])


@dataclass(frozen=True)
class Projection:
    """``logits = input @ weight.T + bias`` with ``input (N, H)``, ``weight (V, H)``, ``bias (V,)``."""

    input: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None

    def logits(self, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The logits of ``hidden (r, H)``, written into the workspace ``out (r, V)``."""
        if self.bias is None:
            return torch.mm(hidden, self.weight.t(), out=out)
        return torch.addmm(self.bias, hidden, self.weight.t(), out=out)

    def input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """``grad (r, V) @ weight``, in the weight's dtype."""
        return grad.to(self.weight.dtype) @ self.weight


def add_weight_grad(dst: torch.Tensor, grad: torch.Tensor, hidden: torch.Tensor) -> None:
    """``dst += grad.T @ hidden`` in ``dst``'s dtype (``grad (r, V)``, ``hidden (r, H)``).

    Half-precision ``grad`` and ``hidden`` go straight into a float32 ``dst`` where the GPU's matmul
    takes them (cuBLAS accumulates in float32 either way); otherwise through copies in ``dst``'s dtype.
    """
    if grad.dtype != dst.dtype and grad.dtype == hidden.dtype and adds_directly(grad.dtype, dst.dtype, dst.device):
        torch.addmm(dst, grad.t(), hidden, torch.float32, out=dst)
    else:
        dst.addmm_(grad.t().to(dst.dtype), hidden.to(dst.dtype))


def adds_directly(grad_dtype: torch.dtype, dst_dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``add_weight_grad`` adds a gradient of ``grad_dtype`` into ``dst_dtype`` without a copy:
    the same dtype, or half precision into float32 on a GPU that takes it (eager mode)."""
    if grad_dtype == dst_dtype:
        return True
    return (
        grad_dtype in HALF_DTYPES
        and dst_dtype == torch.float32
        and not torch.compiler.is_compiling()
        and takes_half_into_float32(device)
    )


@functools.cache
def takes_half_into_float32(device: torch.device) -> bool:
    """Whether ``torch.addmm`` on ``device`` adds a product of half-precision matrices into a float32
    tensor (``out_dtype``; CUDA only, and only in torch versions that accept a float32 ``input``)."""
    if device.type != "cuda":
        return False
    half = torch.zeros(1, 1, dtype=torch.bfloat16, device=device)
    acc = torch.zeros(1, 1, dtype=torch.float32, device=device)
    try:
        torch.addmm(acc, half, half, torch.float32, out=acc)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True
