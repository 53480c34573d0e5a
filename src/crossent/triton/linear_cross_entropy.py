"""Per-chunk loss and logits gradient for the fused linear cross-entropy (``crossent.fused``).

The fused loss computes ``logits = h_chunk @ W.T (+ b)`` one row chunk at a time. For each chunk
this reads the logits once and, when a row fits on chip, writes d(loss)/d(logits) once (into the
logits buffer itself if asked), so the chunk needs no second pass before the dX and dW matmuls.
It is a plain function (no autograd): the fused loss owns the autograd and the reduction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
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

    Per position n (the formulas of ``cross_entropy``):
        index targets: l_n = (1 - eps) w_{y_n} (lse_n - x_{n,y_n}) + (eps / C) sum_c w_c (lse_n - x_{n,c}),
                       and l_n = 0 where y_n == ignore_index;
        prob targets (``target.shape == logits.shape``): l_n = sum_c w_c q_{n,c} (lse_n - x_{n,c}),
                       q = (1 - eps) t + eps / C.
    No reduction: the caller adds the rows and divides by its global normaliser ('mean': the sum
    of kept target weights, or the number of positions), and folds that and the upstream gradient
    into ``grad_scale``, so the gradient is final when written.

    ``grad_out``, when given, receives d(sum_n s_n l_n)/d(logits) in its own dtype with
    s = ``grad_scale`` (0-d: one factor; else one per position). It may be ``logits`` itself.
    Besides O(positions) statistics nothing is allocated.

    Shape:
        - logits: (rows, C) or (rows, C, S), any strides, float16/bfloat16/float32/float64
        - target: (rows,) / (rows, S) int64, already range-checked; or the logits' shape (floating)
        - weight: (C,) or None
        - grad_scale: () or the positions' shape, floating (required with ``grad_out``)
        - grad_out: the logits' shape, or None
        - returns: (loss, lse), both with the positions' shape, float32 (float64 for float64 logits)

    Example:
        >>> import torch
        >>> from crossent.triton import linear_cross_entropy_chunk
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU tensors: TRITON_INTERPRET=1
        >>> hidden, head = torch.ones(3, 1, device=device), torch.tensor([[1.0], [2.0]], device=device)
        >>> logits = hidden @ head.T  # one chunk of rows: [[1, 2], [1, 2], [1, 2]]
        >>> target = torch.tensor([0, 1, 1], device=device)
        >>> scale = torch.tensor(1 / 3, device=device)  # 'mean' over the 3 rows of the whole batch
        >>> loss, lse = linear_cross_entropy_chunk(logits, target, None, -100, 0.0, grad_scale=scale, grad_out=logits)
        >>> [round(v, 4) for v in loss.tolist()]
        [1.3133, 0.3133, 0.3133]
        >>> [round(v, 4) for v in logits[0].tolist()]  # the chunk's logits now hold d loss / d logits
        [-0.2437, 0.2437]
    """
    if grad_out is not None and grad_scale is None:
        raise ValueError("linear_cross_entropy_chunk: grad_out needs grad_scale")
    prob = target.shape == logits.shape
    x = logits if logits.dim() == 3 else logits.unsqueeze(-1)
    rows, C, S = x.shape
    positions = (rows, S) if logits.dim() == 3 else (rows,)
    t = target.reshape(rows, C, S) if prob else target.reshape(rows * S)
    opts = CrossEntropyOptions(ignore_index, max(label_smoothing, 0.0), "none", prob=prob)
    grad = None if grad_out is None else (grad_out if grad_out.dim() == 3 else grad_out.unsqueeze(-1))
    if rows * S == 0 or C == 0:
        if grad is not None:
            grad.zero_()
        acc = acc_dtype(logits.dtype)
        empty = torch.full(positions, -0.0 if prob else 0.0, dtype=acc, device=logits.device)
        return empty, torch.full(positions, float("-inf"), dtype=acc, device=logits.device)
    scale = None
    if grad_scale is not None:
        scale = grad_scale.reshape(-1).contiguous() if grad_scale.dim() > 0 else grad_scale.reshape(())
    loss, stats = row_statistics(x, t, weight, opts, grad=grad, scale=scale)
    lse = stats[:, 0] + stats[:, 1]  # r + log s
    return loss.reshape(positions), lse.reshape(positions)
