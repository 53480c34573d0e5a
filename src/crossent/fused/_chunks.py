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


# torch built with oneDNN (MKL-DNN), and the linear kernel Inductor uses for CPU
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether float32 CPU matmuls can go to oneDNN's linear kernel instead of torch.mm (MKL).

    On AMD CPUs MKL runs its AVX2 code: on the 2-core Zen 5 this was measured on, oneDNN's AVX-512
    kernel computes the chunk's logits 2.8x and its input gradient 1.8x faster (the weight-gradient
    accumulation stays on MKL, which is as fast there and adds in place). Not under ``torch.compile``:
    Inductor lowers this op only for the prepacked weights of its own freezing pass.
    """
    cpu_float32 = device.type == "cpu" and dtype == torch.float32
    return _ONEDNN_LINEAR and cpu_float32 and not torch.compiler.is_compiling()


@dataclass(frozen=True)
class Projection:
    """``logits = input @ weight.T + bias`` with ``input (N, H)``, ``weight (V, H)``, ``bias (V,)``."""

    input: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    onednn: bool

    def logits(self, hidden: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """The logits of ``hidden (r, H)``: fresh from oneDNN, else written into the workspace ``out (r, V)``."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(hidden.contiguous(), self.weight, self.bias, "none", [], "")
        assert out is not None  # fused_pass allocates the workspace whenever oneDNN is off
        if self.bias is None:
            return torch.mm(hidden, self.weight.t(), out=out)
        return torch.addmm(self.bias, hidden, self.weight.t(), out=out)

    def input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """``grad (r, V) @ weight``, in the weight's dtype."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(grad, self.weight.t(), None, "none", [], "")
        return grad.to(self.weight.dtype) @ self.weight
