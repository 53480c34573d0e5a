"""Losses over ranks: vocab-parallel (class-sharded) cross-entropy and data-parallel loss normalization.

Built on ``torch.distributed`` (gloo on CPU, NCCL on GPU). The contract for vocab parallelism:
every tensor with a class dimension (logits, probability targets, class weights, the classifier's
``linear_weight``) is sharded the same way, contiguous slices in rank order, widths free (class weights
may also be given whole, ``(V,)``); everything else (class-index targets, hidden states, options) is
the same on every rank. ``torch.distributed.tensor.DTensor`` logits or classifiers sharded by class
reach these losses through ``crossent.cross_entropy`` and ``crossent.linear_cross_entropy``
(``crossent.distributed.dtensor``). ``None`` for a
``process_group`` always means "no communication".
"""

from crossent.distributed._group import PeerError
from crossent.distributed.cross_entropy import vocab_parallel_cross_entropy
from crossent.distributed.linear_cross_entropy import vocab_parallel_linear_cross_entropy
from crossent.distributed.normalization import count_targets, normalized_sum
from crossent.distributed.sharding import vocab_range

__all__ = [
    "PeerError",
    "count_targets",
    "normalized_sum",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
    "vocab_range",
]
