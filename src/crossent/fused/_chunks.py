"""Rows in chunks, and the projection that turns a chunk of hidden states into its logits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


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
