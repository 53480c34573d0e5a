"""Per-chunk loss and logits gradient for the fused linear cross-entropy.

The fused linear loss (``crossent.fused``) computes ``logits = h_chunk @ W.T`` one row chunk at a
time. For each chunk this kernel reads the logits once and, when the chunk's vocabulary fits on
chip, writes d(loss)/d(logits) once (in place into the logits buffer if asked), so the chunk's
logits never need a second pass before the dX and dW matmuls consume the gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crossent.triton._common import acc_dtype
from crossent.triton._cross_entropy_kernels import CrossEntropyOptions, row_statistics


def linear_cross_entropy_chunk(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    grad_scale: Tensor | None = None,
    grad_out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Unreduced cross-entropy of one chunk of logits, and optionally its gradient.

    Per row n (same formula as ``cross_entropy`` with class-index targets):
    l_n = (1 - eps) w_{y_n} (lse_n - x_{n,y_n}) + (eps / C) sum_c w_c (lse_n - x_{n,c}), and
    l_n = 0 where y_n == ignore_index. No reduction: the caller sums rows and divides by its
    global normaliser (sum of kept target weights for 'mean'), which it passes back through
    ``grad_scale`` so the gradient is final when written.

    When ``grad_out`` is given it receives d(sum_n s_n l_n)/d(logits) in its own dtype, with
    s = ``grad_scale`` (0-d: one factor for all rows; (rows,): one per row). ``grad_out`` may be
    ``logits`` itself (then the logits are overwritten). Nothing is allocated besides O(rows).

    Shape:
        - logits: (rows, C), any strides, float16/bfloat16/float32/float64
        - target: (rows,), int64, already range-checked
        - weight: (C,) or None
        - grad_scale: () or (rows,), floating (required with ``grad_out``)
        - grad_out: (rows, C) or None
        - returns: (loss, lse), both (rows,) in float32 (float64 for float64 logits)

    Example:
        >>> logits = hidden[:4096] @ lm_head.T
        >>> loss, lse = linear_cross_entropy_chunk(logits, y[:4096], None, -100, 0.0,
        ...                                        grad_scale=1 / total_weight, grad_out=logits)
    """
    if grad_out is not None and grad_scale is None:
        raise ValueError("linear_cross_entropy_chunk: grad_out needs grad_scale")
    rows, C = logits.shape
    opts = CrossEntropyOptions(ignore_index, max(label_smoothing, 0.0), "none", prob=False)
    x = logits.unsqueeze(-1)
    if rows == 0 or C == 0:
        acc = acc_dtype(logits.dtype)
        if grad_out is not None:
            grad_out.zero_()
        empty = torch.zeros(rows, dtype=acc, device=logits.device)
        return empty, empty.clone()
    scale = grad_scale.to(acc_dtype(logits.dtype)).contiguous() if grad_scale is not None else None
    loss, stats = row_statistics(
        x, target, weight, opts, grad=grad_out.unsqueeze(-1) if grad_out is not None else None, scale=scale
    )
    return loss, stats[:, 0] + stats[:, 1]
