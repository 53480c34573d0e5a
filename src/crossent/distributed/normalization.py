"""Loss normalization across micro-batches and data-parallel ranks: sum, then divide by a global count.

Averaging per-micro-batch (or per-rank) means weights every micro-batch equally, whatever its number
of kept targets: that was the 2024 gradient-accumulation bug. The exact recipe sums every loss and
divides by the number of kept targets of the whole step, counted once up front::

    count = count_targets(all_targets_of_this_step, process_group=dp_group)  # one all-reduce
    for micro in micro_batches:
        cross_entropy(logits(micro), micro.target, normalizer=count).backward()

``normalizer=`` is accepted by ``crossent.cross_entropy``, ``crossent.linear_cross_entropy`` and the
vocab-parallel losses; it never reads the count on the host, so it adds no device sync.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from crossent import _checks
from crossent._reduction import divisor, reduce
from crossent.distributed import _group
from crossent.distributed._group import resolve
from crossent.ops._layout import accumulation_dtype

__all__ = ["count_targets", "normalized_sum"]


def normalized_sum(loss: torch.Tensor, normalizer: torch.Tensor | float) -> torch.Tensor:
    r"""``sum(loss) / normalizer``, accumulated in float32 (float64 for float64), returned in ``loss.dtype``.

    The summed loss of a micro-batch divided by a count that covers more than that micro-batch,
    e.g. all micro-batches of a step on all data-parallel ranks (:func:`count_targets`)::

        out = (sum_n loss_n) / normalizer

    Gradients flow to ``loss`` (scaled by ``1 / normalizer``); the normalizer is a constant. A
    tensor normalizer is never read on the host. Summing in float32 keeps a float16 loss from
    overflowing where the per-element values do not.

    Args:
        loss: per-element losses (``reduction='none'``) of any shape.
        normalizer: the divisor, a number or a one-element tensor (an integer count is fine).

    Shape:
        ==========  =======
        loss        ``(*)``
        normalizer  ``()`` or one element
        output      ``()``
        ==========  =======

    Example:
        >>> import torch, crossent
        >>> from crossent.distributed import normalized_sum
        >>> per_token = crossent.cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, -100]), reduction="none")
        >>> normalized_sum(per_token, torch.tensor(4))
        tensor(0.6931)
    """
    _checks.check_normalizer(normalizer, "sum", "normalized_sum")
    acc = accumulation_dtype(loss.dtype)
    return reduce(loss.sum(dtype=acc), "mean", divisor(normalizer, acc)).to(loss.dtype)


def count_targets(
    target: torch.Tensor,
    ignore_index: int = -100,
    weight: torch.Tensor | None = None,
    process_group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    r"""The number of kept class-index targets (their total class weight with ``weight``), over a group.

    ::

        count = sum over ranks of sum_n m_n * w[y_n],    m_n = [y_n != ignore_index]

    This is exactly the divisor of ``reduction='mean'`` for class-index cross-entropy, so
    ``cross_entropy(x, y, reduction='sum') / count_targets(y)`` is ``cross_entropy(x, y)``. Pass all
    targets of an optimizer step (every micro-batch) and the data-parallel group, then use the result
    as ``normalizer=`` of each micro-batch's loss. With ``process_group=None`` nothing is communicated.
    With a group, the count is one all-reduce SUM, in float64 (exact for counts below ``2**53``)
    whatever the result's dtype; a rank whose input is invalid makes every rank raise
    (:class:`crossent.distributed.PeerError` on the others) instead of leaving them waiting. The
    ranks' ``ignore_index`` and ``weight`` are not compared.

    Args:
        target: class indices (any integer dtype), any shape.
        ignore_index: targets equal to it are not counted.
        weight: the full class-weight vector ``(C,)``; then each kept target counts ``w[y]``.
        process_group: sum the count over this group (e.g. the data-parallel group); None: local.

    Returns:
        A 0-dim tensor on ``target``'s device: int64 without ``weight``, else float32 (float64 for
        float64 weights). Never read on the host, so the call adds no sync of its own.

    Shape:
        ==========  ===================
        target      ``(*)``
        weight      ``(C,)``
        output      ``()``
        ==========  ===================

    Example:
        >>> import torch
        >>> from crossent.distributed import count_targets
        >>> count_targets(torch.tensor([0, 2, -100, 2]))
        tensor(3)
        >>> count_targets(torch.tensor([0, 2, -100, 2]), weight=torch.tensor([1.0, 1.0, 0.5]))
        tensor(2.)
    """
    if process_group is None:
        return _local_count(target, ignore_index, weight)
    group = resolve(process_group, "count_targets")
    # the count travels in float64 whatever its dtype, so that a rank with bad input still sends a
    # buffer of the same size: no rank waits, none is aborted by the backend
    try:
        count = _local_count(target, ignore_index, weight)
    except Exception:
        zero = torch.zeros((), dtype=torch.float64, device=group.device_for(target))
        _group.sum_flagged(group, zero, True, "count_targets", _group.REJECTED)
        raise
    return _group.sum_flagged(group, count.double(), False, "count_targets", _group.REJECTED).to(count.dtype)


def _local_count(target: object, ignore_index: object, weight: object) -> torch.Tensor:
    t = _checks.check_tensor(target, "count_targets", "target", 1)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"count_targets: target must hold class indices (an integer dtype), got {t.dtype}")
    index = _checks.check_int(ignore_index, "count_targets", "ignore_index", 2)
    keep = t != index
    if weight is None:
        return keep.sum()
    w = _checks.check_tensor(weight, "count_targets", "weight", 3)
    if w.dim() != 1 or not w.is_floating_point():
        raise ValueError(f"count_targets: weight must be a 1-D floating tensor (C,), got {w.dtype} {list(w.shape)}")
    _checks.class_targets(t, w.numel(), index)
    kept = torch.where(keep, t.long(), 0)
    w = w.to(accumulation_dtype(w.dtype))
    return torch.where(keep, w[kept], 0).sum()
