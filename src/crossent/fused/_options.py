"""The settings of one fused call, decided once before the autograd Function runs, and the chunk size.

A chunk is a group of rows whose logits exist at the same time. Its workspace is the chunk's logits
plus, when the gradient is computed in a wider dtype than the logits, that gradient and its copy in
the weight's dtype for the input-gradient matmul. On the Triton path the kernel writes the gradient
over the logits in their own dtype, so the workspace is the logits alone. The row count is chosen so
that this stays within the budget: ``chunk_size`` rows or ``workspace_bytes`` when the caller gives
one, else ``default_workspace_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossent._dispatch import Backend
from crossent.fused._chunks import adds_directly
from crossent.ops._layout import accumulation_dtype
from crossent.ops.cross_entropy import CrossEntropyCall

MIN_WORKSPACE_BYTES = 16 << 20
MAX_WORKSPACE_BYTES = 256 << 20


def default_workspace_bytes(weight_grad_bytes: int) -> int:
    """A quarter of the weight gradient the call produces anyway, within [16 MiB, 256 MiB].

    The chunk's matmuls need enough rows to run at full speed, while the memory of the call is
    dominated by the weight gradient. Tying the workspace to it gives ``H / 4`` float32 rows whatever
    the vocabulary size (128 rows for H = 512: a 16 MiB workspace next to a 64 MiB weight gradient at
    V = 32768, 63 MiB next to 250 MiB at V = 128256), and a matmul of ``H / 4`` rows by ``H`` is
    large enough to be compute-bound on any CPU.
    """
    return min(max(weight_grad_bytes // 4, MIN_WORKSPACE_BYTES), MAX_WORKSPACE_BYTES)


@dataclass(frozen=True)
class FusedOptions:
    """Everything about a call that is not a tensor."""

    call: CrossEntropyCall  # the cross-entropy the call stands for
    num_classes: int  # C; the logits of a row are C * positions values
    chunk_rows: int
    grad_dtype: torch.dtype  # dtype the weight and bias gradients accumulate in
    logits_dtype: torch.dtype  # dtype the loss takes the logits in (and returns, for class indices)
    drop_ignored: bool  # select the rows with a kept target before any matmul (eager mode only)
    backend: Backend = "torch"  # what computes each chunk's cross-entropy: crossent's torch path or Triton


def workspace_row_bytes(
    classes: int, logits_dtype: torch.dtype, grad_dtype: torch.dtype | None, temporaries: int = 0
) -> int:
    """Bytes of workspace per chunk row: its logits, its gradient when that is held in ``grad_dtype``,
    and ``temporaries`` more values per logit in the accumulation dtype (``dz/dx`` of a softcap, and
    ``z - k`` beside ``exp(z - k)`` for the statistics)."""
    logits = classes * logits_dtype.itemsize
    extra = classes * temporaries * accumulation_dtype(logits_dtype).itemsize
    if grad_dtype is None or grad_dtype == logits_dtype:
        return logits + extra  # the gradient overwrites the logits
    return logits + extra + classes * (grad_dtype.itemsize + logits_dtype.itemsize)


def chunk_rows(
    rows: int, row_bytes: int, chunk_size: int | None, workspace_bytes: int | None, default_bytes: int
) -> int:
    """Rows per chunk: ``chunk_size`` when given, else as many as fit in the workspace budget (at least 1)."""
    if chunk_size is not None and workspace_bytes is not None:
        raise ValueError("linear_cross_entropy: pass chunk_size or workspace_bytes, not both")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"linear_cross_entropy: chunk_size must be a positive int, got {chunk_size!r}")
        return min(chunk_size, max(rows, 1))
    budget = default_bytes if workspace_bytes is None else workspace_bytes
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"linear_cross_entropy: workspace_bytes must be a positive int, got {workspace_bytes!r}")
    return min(max(budget // max(row_bytes, 1), 1), max(rows, 1))


def plan(
    call: CrossEntropyCall,
    h: torch.Tensor,
    w: torch.Tensor,
    num_classes: int,
    loss_dtypes: tuple[torch.dtype, ...],
    *,
    chunk_size: int | None,
    workspace_bytes: int | None = None,
    acc_dtype: torch.dtype | None = None,
    logits_dtype: torch.dtype | None = None,
    drop_ignored: bool,
    backend: Backend = "torch",
) -> FusedOptions:
    """The options of a fused call on flat ``h (N, H)`` and ``w (C * S, H)``: its chunk size above all.

    ``loss_dtypes`` are those the loss accumulates from besides the logits (probability targets, class
    weights); ``acc_dtype`` overrides the weight gradient's accumulation dtype; ``backend`` is what
    computes each chunk's cross-entropy (``_dispatch.resolve``'s choice).
    """
    grad_dtype = acc_dtype if acc_dtype is not None else accumulation_dtype(w.dtype)
    acc = accumulation_dtype(h.dtype, *loss_dtypes)
    if backend == "triton":
        # the gradient overwrites the logits; the weight gradient's matmul copies it to its dtype first
        # unless the GPU adds half-precision products into it directly
        copied = call.gradient_expected and not adds_directly(h.dtype, grad_dtype, h.device)
        row_bytes = w.shape[0] * (h.dtype.itemsize + (grad_dtype.itemsize if copied else 0))
    else:
        temporaries = int(call.options.softcap is not None) + int(call.options.extras)
        row_bytes = workspace_row_bytes(w.shape[0], h.dtype, acc if call.gradient_expected else None, temporaries)
    default = default_workspace_bytes(w.numel() * grad_dtype.itemsize)
    rows = chunk_rows(h.shape[0], row_bytes, chunk_size, workspace_bytes, default)
    logits = logits_dtype if logits_dtype is not None else h.dtype
    return FusedOptions(call, num_classes, rows, grad_dtype, logits, drop_ignored, backend)
