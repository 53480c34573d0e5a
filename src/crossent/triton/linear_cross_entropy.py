"""Per-chunk loss and logits gradient for the fused linear cross-entropy (``crossent.fused``).

The fused loss computes ``logits = h_chunk @ W.T (+ b)`` one row chunk at a time (cuBLAS on CUDA).
For each chunk this reads the logits once and, when a row fits on chip, writes d(loss)/d(logits)
once (into the logits buffer itself if asked), so the chunk needs no second pass before the dX and
dW matmuls. ``linear_cross_entropy_chunk`` is a plain function (no autograd): the fused loss owns
the autograd and the reduction. ``walk_chunks`` is what ``crossent.linear_cross_entropy`` runs on
each chunk on the Triton path, through the custom op ``crossent_triton::linear_cross_entropy_chunk``
(so ``torch.compile`` traces it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from crossent._engine import Block, ClassIndex, Kind, Statistics
from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.triton._cross_entropy_kernels import CrossEntropyOptions, row_statistics

# The ignore_index of the fused loss's chunks: positions that do not count (ignored, or past a causal
# shift) are given this id, never a class.
NOT_COUNTED = -1


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
        - returns: (loss, lse), both with the positions' shape, float32 (float64 when any of logits,
          probability targets or weight is float64)

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
        acc = _loss_dtype(logits, target, weight, prob)
        empty = torch.full(positions, -0.0 if prob else 0.0, dtype=acc, device=logits.device)
        return empty, torch.full(positions, float("-inf"), dtype=acc, device=logits.device)
    scale = None
    if grad_scale is not None:
        scale = grad_scale.reshape(-1).contiguous() if grad_scale.dim() > 0 else grad_scale.reshape(())
    loss, stats = row_statistics(x, t, weight, opts, grad=grad, scale=scale)
    lse = stats[:, 0] + stats[:, 1]  # r + log s
    return loss.reshape(positions), lse.reshape(positions)


def _loss_dtype(logits: Tensor, target: Tensor, weight: Tensor | None, prob: bool) -> torch.dtype:
    """The accumulation dtype of a chunk: that of the logits, probability targets and weight together."""
    return acc_dtype(logits.dtype, *((target.dtype,) if prob else ()), *((weight.dtype,) if weight is not None else ()))


@torch.library.custom_op("crossent_triton::linear_cross_entropy_chunk", mutates_args=("logits",))
def chunk_op(
    logits: Tensor, target: Tensor, weight: Tensor | None, label_smoothing: float, grad_scale: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(loss, lse) ``(rows, S)`` of the chunk's ``(rows, C, S)`` logits; with ``grad_scale``, the logits
    are overwritten with their gradient. Class ids are ``NOT_COUNTED`` where a position does not count."""
    grad_out = logits if grad_scale is not None else None
    return linear_cross_entropy_chunk(logits, target, weight, NOT_COUNTED, label_smoothing, grad_scale, grad_out)


@chunk_op.register_fake
def _chunk_fake(logits, target, weight, label_smoothing, grad_scale):
    rows, _, s = logits.shape
    acc = _loss_dtype(logits, target, weight, target.shape == logits.shape)
    return logits.new_empty((rows, s), dtype=acc), logits.new_empty((rows, s), dtype=acc)


def _chunk_target(kind: Kind, rows: slice | Tensor) -> Tensor:
    """The chunk's targets as the kernel takes them: class ids (``NOT_COUNTED`` where a position does
    not count), or the probabilities ``(r, C, S)``."""
    if isinstance(kind, ClassIndex):
        return kind.local[rows].masked_fill(~kind.keep[rows], NOT_COUNTED)
    return kind.target[rows]


def walk_chunks(
    kind: Kind,
    blocks: Iterable[tuple[Block, Tensor, Tensor | None]],
    *,
    coef: Tensor | None = None,
    grad: Callable[[Block, Tensor], None] | None = None,
) -> tuple[Statistics, Tensor]:
    """The fused loss's walk over its chunks on the Triton kernel (``crossent._engine.walk`` on torch).

    ``blocks`` yields ``(block, logits, _)``: a chunk's rows and its logits ``(r, C, S)`` in the
    workspace, in their own dtype (the kernel accumulates in float32, float64 for float64). One
    kernel pass gives each chunk's loss and log-sum-exp; with ``coef`` (``d output / d l_n``, 0-dim or
    per position) and ``grad``, the same pass overwrites the logits with their gradient, which is
    then handed to ``grad(block, logits)``. The statistics are recomputed rather than read, so a
    backward walks the same way as the forward.

    Returns the statistics of every position, as ``k = lse`` and ``S = 1`` (what the loss saves for a
    backward), and the loss of every position ``(N, S)``; positions that no chunk covers (dropped
    rows, whose every target is ignored) get 0.
    """
    n, s = kind.positions
    device = (kind.keep if isinstance(kind, ClassIndex) else kind.target).device
    loss = torch.zeros(n, s, dtype=kind.acc, device=device)
    lse = torch.zeros_like(loss)
    weight = None if kind.weight is None else kind.weight.contiguous()  # the kernel reads it with unit stride
    for block, logits, _ in blocks:
        rows = block[0]
        scale = None
        if coef is not None and grad is not None:
            scale = coef if coef.dim() == 0 else coef[rows]
        chunk_loss, chunk_lse = chunk_op(logits, _chunk_target(kind, rows), weight, kind.eps, scale)
        loss[rows] = chunk_loss
        lse[rows] = chunk_lse
        if scale is not None and grad is not None:
            grad(block, logits)
    return Statistics(lse, torch.ones_like(lse), lse, None, None), loss
