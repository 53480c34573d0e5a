"""``vocab_parallel_cross_entropy``: cross-entropy over logits sharded on the class dimension.

Once the ranks agree (``_consensus``), crossent's logits driver (``crossent.ops.cross_entropy``) runs
the engine on this rank's shard, with the engine's collective ``combine`` inside its autograd
Function's forward (``torch.distributed.all_reduce`` has no autograd formula of its own).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from crossent.distributed import _consensus, _validate
from crossent.distributed._group import resolve
from crossent.ops._layout import class_dim
from crossent.ops.cross_entropy import CrossEntropyFunction, Shard

__all__ = ["vocab_parallel_cross_entropy"]

CALLER = "vocab_parallel_cross_entropy"


def vocab_parallel_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    process_group: dist.ProcessGroup,
    normalizer: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""Cross-entropy when each rank of ``process_group`` holds a contiguous slice of the classes.

    Rank ``r`` holds the logits of classes ``[o_r, o_r + V_r)``, ranks in order (``o_0 = 0``, shard
    widths may differ, even be 0). Every rank returns the loss, and computes the gradient of its own
    shard, that ``crossent.cross_entropy`` gives on the concatenated logits ``(N, V, d1..dK)``:

    With class indices ``y`` (global ids, the same on every rank; ``m_n = [y_n != ignore_index]``)::

        l_n = m_n [(1 - eps) w[y_n] (lse_n - x[n, y_n]) + (eps / V) sum_c w[c] (lse_n - x[n, c])]

    With class probabilities ``t`` (each rank holds its class slice, like ``input``)::

        l_n = -sum_c w[c] q[n, c] log_softmax(x)[n, c],    q = (1 - eps) t + eps / V

    where sums over ``c`` run over all ``V`` classes of all ranks, and label smoothing is global.

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides the sum
    by ``W = sum_n m_n w[y_n]`` for class indices (nan when every target is ignored) and by the number
    of positions for probabilities. With ``normalizer`` the loss is ``sum_n l_n / normalizer`` (for
    ``'mean'`` and ``'sum'`` alike; ``'none'`` refuses it): pass the global count of kept targets
    (:func:`crossent.distributed.count_targets`) to normalize across micro-batches and ranks.

    Communication: the forward pass makes three collectives on ``process_group``: an all-reduce MAX
    of a fixed-size agreement table (15 int64 values per rank, whatever the input), an all-reduce MAX
    of ``N * d1..dK`` values and one all-reduce SUM of 2 to 5 values per position (3 for
    probabilities), both in float32 (float64 for float64 inputs). The backward pass makes none, and
    is first-order: ``create_graph=True`` raises ``RuntimeError`` (as crossent's other losses do).

    Agreement: before sending anything whose size depends on the input, every rank learns whether
    any rank rejected its arguments, and whether all ranks agree on: the function called, the shape
    of ``input`` without its class dimension, the target kind (class indices or probabilities),
    ``reduction``, ``ignore_index``, ``label_smoothing`` (after clipping: values up to 0 mean none),
    whether ``weight`` is given, the dtypes of ``input``, of probability targets and of ``weight``,
    whether ``normalizer`` is given and its value (as float64, bit for bit; a tensor is compared on
    its device, never read on the host), and the class-index targets, by a 64-bit digest of the ids
    and their positions (a single changed target is always caught, other differences all but
    always; it is not a cryptographic hash, so targets crafted to collide could pass). A bad
    argument on one rank (not a tensor, a wrong shape, dtype or device, a bad option) raises there
    the exception torch raises for it, and :class:`crossent.distributed.PeerError` on the others;
    ranks that disagree all raise ``ValueError`` naming what differs; a kept class id outside
    ``[0, V)`` raises ``IndexError``. No rank is left waiting in a collective. Not compared: the
    sharded tensors (logits, probability targets, weight slices), which differ by design. On CPU
    the checks read the table on the host; on accelerators they are device-side asserts (no host
    sync). Set a ``timeout`` in ``init_process_group`` for what no check can see (a rank that never
    calls the loss).

    Args:
        input: this rank's logits ``(N, V_r, d1..dK)`` (or ``(V_r,)``), float.
        target: global class ids ``(N, d1..dK)`` (int64, or uint8 for 2-dim inputs), identical on every
            rank; or this rank's slice of the class probabilities, same shape as ``input``.
        weight: this rank's slice of the class weights, ``(V_r,)``, sharded like ``input``.
        ignore_index: class-index targets equal to it contribute nothing (probabilities need it < 0).
            The same on every rank.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``, the same on every rank.
        label_smoothing: ``eps`` in ``[0, 1]``, spread over all ``V`` classes; the same on every rank.
        process_group: the ranks that share the class dimension (e.g. ``dist.group.WORLD``).
        normalizer: divide the summed loss by this number or one-element tensor instead of the
            ``'mean'`` divisor; the same value on every rank. Never read on the host; no gradient
            flows into it.

    Shape:
        ===========================  ==============================  ==========================
        input (rank r)               target                          output (``'none'``)
        ===========================  ==============================  ==========================
        ``(V_r,)``                   ``()`` or ``(V_r,)``            ``()``
        ``(N, V_r)``                 ``(N,)`` or ``(N, V_r)``        ``(N,)``
        ``(N, V_r, d1, ..., dK)``    ``(N, d1, ..., dK)`` or input's  ``(N, d1, ..., dK)``
        ===========================  ==============================  ==========================

    Example:
        >>> # on each of 2 ranks (torchrun --nproc-per-node 2), the vocabulary split 3 + 2
        >>> import torch, torch.distributed as dist
        >>> from crossent.distributed import vocab_parallel_cross_entropy
        >>> dist.init_process_group("gloo")  # doctest: +SKIP
        >>> logits = torch.tensor([[1.0, 2.0, 0.5, 3.0, -1.0]])  # the full (N, V) logits
        >>> shard = logits[:, :3] if dist.get_rank() == 0 else logits[:, 3:]  # doctest: +SKIP
        >>> vocab_parallel_cross_entropy(shard, torch.tensor([3]), process_group=dist.group.WORLD)  # doctest: +SKIP
        tensor(0.4723)
    """
    group = resolve(process_group, CALLER)
    device = group.device_for(input)
    try:
        call = _validate.check_cross_entropy(
            input, target, weight, ignore_index, reduction, label_smoothing, normalizer, CALLER
        )
        mine = _consensus.record(
            _consensus.Call(
                function=CALLER,
                spec=call,
                classes=input.shape[class_dim(input)],
                shape=tuple(input.shape[:1] + input.shape[2:]) if input.dim() > 1 else (),
                dtypes=_validate.loss_dtypes(input, call, target, weight),
                target=target,
                normalizer=normalizer,
            ),
            device,
        )
    except Exception as error:  # reported to the peers through the agreement collective, then re-raised
        _consensus.withdraw(group, error, device)
    layout = _consensus.agree(group, mine, CALLER)
    shard = Shard(group.handle, layout.offset, layout.num_classes)
    out: torch.Tensor = CrossEntropyFunction.apply(input, target, weight, normalizer, call, shard)
    return out
