"""Where a rank's classes sit in the global class dimension, for slicing global tensors once at setup."""

from __future__ import annotations

import torch
import torch.distributed as dist

from crossent.distributed._group import REJECTED, default_device, peer_error, resolve

__all__ = ["vocab_range"]


def vocab_range(local_classes: int, process_group: dist.ProcessGroup) -> tuple[int, int]:
    """``(start, stop)``: the global class ids of this rank's shard, given every rank's shard width.

    Shards are contiguous and in rank order: ``start`` is the sum of the widths of the lower ranks.
    Use it to cut a rank's slice of a global tensor (class weights, a vocabulary projection) at
    setup time: it makes one all-gather and reads the result on the host. A bad ``local_classes`` on
    one rank raises ``ValueError`` there and :class:`crossent.distributed.PeerError` on the others.

    Args:
        local_classes: this rank's number of classes ``V_r`` (may differ between ranks, may be 0).
        process_group: the ranks that share the class dimension.

    Example:
        >>> # rank 1 of 2, the vocabulary split 3 + 2
        >>> vocab_range(2, dist.group.WORLD)  # doctest: +SKIP
        (3, 5)
    """
    group = resolve(process_group, "vocab_range")
    valid = not isinstance(local_classes, bool) and isinstance(local_classes, int) and 0 <= local_classes < 2**63
    device = default_device(process_group)
    widths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(group.size)]
    # a rank with a bad width still joins, with -1, so that no rank waits for it
    dist.all_gather(widths, torch.tensor([local_classes if valid else -1], device=device), group=process_group)
    if not valid:
        raise ValueError(f"vocab_range: local_classes must be a non-negative int, got {local_classes!r}")
    gathered = [int(w) for w in widths]
    failed = [r for r, w in enumerate(gathered) if w < 0]
    if failed:
        raise peer_error("vocab_range", failed, REJECTED)
    start = sum(gathered[: group.rank])
    return start, start + local_classes
