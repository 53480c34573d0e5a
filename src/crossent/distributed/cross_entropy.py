"""``vocab_parallel_cross_entropy``, and the per-rank checks of a cross-entropy over a shard.

Once the ranks agree (``_consensus``), crossent's logits driver (``crossent.ops.cross_entropy``) runs
the engine on this rank's shard, the engine's collective ``combine`` inside its autograd Function's
forward (``all_reduce`` has no autograd formula of its own). The checks are ``crossent._checks``
applied to a shard: its class weight is this rank's slice ``(V_r,)``, it may hold no class at all, and
the checks that need the other ranks (class ids in ``[0, V)``, ranks agreeing) run in ``_consensus``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from crossent import _checks
from crossent._engine import LogitOptions
from crossent._reduction import resolve as resolve_reduction
from crossent._results import CrossEntropyStats, pack
from crossent.distributed import _consensus
from crossent.distributed._group import resolve
from crossent.ops._layout import class_dim
from crossent.ops.cross_entropy import CrossEntropyCall, CrossEntropyFunction, Shard

__all__ = ["vocab_parallel_cross_entropy"]

CALLER = "vocab_parallel_cross_entropy"
_FN = "cross_entropy_loss"


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
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, CrossEntropyStats]:
    r"""Cross-entropy when each rank of ``process_group`` holds a contiguous slice of the classes.

    Rank ``r`` holds the logits of classes ``[o_r, o_r + V_r)``, ranks in order (``o_0 = 0``, widths
    free, even 0). Every rank returns the loss, and the gradient of its own shard, that
    ``crossent.cross_entropy`` gives on the concatenated logits ``(N, V, d1..dK)``. With class indices
    ``y`` (global ids, the same on every rank; ``m_n = [y_n != ignore_index]``), or class probabilities
    ``t`` (each rank holds its class slice, like ``input``)::

        l_n = m_n [(1 - eps) w[y_n] (lse_n - x[n, y_n]) + (eps / V) sum_c w[c] (lse_n - x[n, c])]
        l_n = -sum_c w[c] q[n, c] log_softmax(x)[n, c],    q = (1 - eps) t + eps / V

    where sums over ``c`` run over all ``V`` classes of all ranks: label smoothing is global.

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides the sum
    by ``W = sum_n m_n w[y_n]`` for class indices (nan when every target is ignored) and by the number
    of positions for probabilities. With ``normalizer`` the loss is ``sum_n l_n / normalizer`` (for
    ``'mean'`` and ``'sum'`` alike; ``'none'`` refuses it): pass the global count of kept targets
    (:func:`crossent.distributed.count_targets`) to normalize across micro-batches and ranks.

    Communication: the forward makes three collectives on ``process_group``: an all-reduce MAX of a
    fixed-size agreement table (22 int64 values per rank, whatever the input), an all-reduce MAX of
    ``N * d1..dK`` values and one all-reduce SUM of 2 to 5 values per position (3 for probabilities),
    both in float32 (float64 for float64 inputs). The backward makes none, and is first-order:
    ``create_graph=True`` raises ``RuntimeError`` (as crossent's other losses do).

    Language-model options: ``softcap``, ``temperature`` and ``z_loss`` are those of
    :func:`crossent.cross_entropy` and add no collective (the transform is element-wise, the z-loss is
    formed from the global log-sum-exp). ``return_stats=True`` returns ``(loss, stats)`` as there: the
    global ``lse``, entropy and accuracy. The entropy's sum travels in the same all-reduce SUM (one
    more value per position); the accuracy's global first argmax adds a fourth collective, an
    all-reduce MIN of ``N * d1..dK`` int64 values.

    Agreement: before sending anything whose size depends on the input, every rank learns whether
    any rank rejected its arguments, and whether all ranks agree on: the function called, the shape
    of ``input`` without its class dimension, the target kind (class indices or probabilities),
    ``reduction``, ``ignore_index``, ``label_smoothing`` (after clipping: values up to 0 mean none),
    whether ``weight`` is given, the dtypes of ``input``, of probability targets and of ``weight``,
    ``softcap``, ``temperature``, ``z_loss``, ``return_stats`` (and the linear loss's ``shift`` and
    ``focal_gamma``),
    whether ``normalizer`` is given and its value (as float64, bit for bit; a tensor is compared on
    its device, never read on the host), and the class-index targets, by a 64-bit digest of the ids
    and their positions (a single changed target is always caught, other differences all but
    always; it is not a cryptographic hash, so targets crafted to collide could pass). A bad
    argument on one rank (not a tensor, a wrong shape, dtype or device, a bad option) raises there
    the exception torch raises for it, and :class:`crossent.distributed.PeerError` on the others;
    ranks that disagree all raise ``ValueError`` naming what differs; a kept class id outside
    ``[0, V)`` raises ``IndexError``. No rank is left waiting in a collective. Not compared: the
    sharded tensors (logits, probability targets, weight slices), which differ by design, and the
    integer dtype of class ids. On CPU the checks read the table on the host; on accelerators they
    are device-side asserts (no host sync; like any device-side assert, a failed one leaves the CUDA
    context unusable). Set a ``timeout`` in ``init_process_group`` for what no check can see (a rank
    that never calls the loss).

    Args:
        input: this rank's logits ``(N, V_r, d1..dK)`` (or ``(V_r,)``), float.
        target: global class ids ``(N, d1..dK)`` (int64, or uint8 for 2-dim inputs), identical on every
            rank; or this rank's slice of the class probabilities, same shape as ``input``.
        weight: the class weights, this rank's slice ``(V_r,)`` or all ``V`` of them ``(V,)``, told apart by
            length once the agreement exchange gives ``V`` (where ``V_r == V``, one rank holding every
            class, the two are the same vector). A full vector is cut at this rank's offset on its
            device (no host read); with probability targets its gradient holds this rank's classes'
            terms only (sum it over the ranks for the whole). A weight of any other shape raises
            ``RuntimeError`` naming both lengths on its rank, ``PeerError`` on the others.
        ignore_index: class-index targets equal to it contribute nothing (probabilities need it < 0).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        label_smoothing: ``eps`` in ``[0, 1]``, spread over all ``V`` classes.
        process_group: the ranks that share the class dimension (e.g. ``dist.group.WORLD``).
        normalizer: divide the summed loss by this number or one-element tensor instead of the
            ``'mean'`` divisor. Never read on the host; no gradient flows into it.
        softcap, temperature, z_loss, return_stats: the language-model options (see above).

    Every argument but the sharded tensors must be the same on every rank.

    Shape:
        =========================  ==================================  ======================
        input (rank r)             target                              output (``'none'``)
        =========================  ==================================  ======================
        ``(V_r,)``                 ``()`` or ``(V_r,)``                ``()``
        ``(N, V_r)``               ``(N,)`` or ``(N, V_r)``            ``(N,)``
        ``(N, V_r, d1, ..., dK)``  ``(N, d1, ..., dK)`` or as input    ``(N, d1, ..., dK)``
        =========================  ==================================  ======================

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

    def validate() -> tuple[_consensus.Call, CrossEntropyCall]:
        options = _checks.logit_options(CALLER, softcap, temperature, z_loss, return_stats)
        call = check_cross_entropy(
            input, target, weight, ignore_index, reduction, label_smoothing, normalizer, CALLER, options=options
        )
        shape = tuple(input.shape[:1] + input.shape[2:]) if input.dim() > 1 else ()
        dtypes = loss_dtypes(input, call, target, weight)
        classes = input.shape[class_dim(input)]
        weight_shape = weight_shape_of(weight)
        return _consensus.Call(
            CALLER, call, classes, shape, dtypes, target, normalizer, weight_shape=weight_shape
        ), call

    shard, call = _consensus.agree_on(group, group.device_for(input), CALLER, validate)
    weight = own_slice(weight, shard, input.shape[class_dim(input)])
    return pack(CrossEntropyFunction.apply(input, target, weight, normalizer, call, shard), call.probability, False)


def check_cross_entropy(
    input: object,
    target: object,
    weight: object,
    ignore_index: object,
    reduction: object,
    label_smoothing: object,
    normalizer: object,
    caller: str,
    device: torch.device | None = None,
    options: LogitOptions | None = None,
) -> CrossEntropyCall:
    """Validate one rank's arguments; raises what ``torch.nn.functional.cross_entropy`` raises for the same shard.

    A class weight of another shape than the shard's ``(V_r,)`` is left to the agreement table, which
    knows ``V`` (it may be the full vector).

    ``device``: where ``target`` and ``weight`` must be (default: ``input``'s device; the linear loss
    passes meta logits and the hidden states' device).
    """
    mode = resolve_reduction(reduction)
    x = _checks.check_tensor(input, _FN, "input", 1)
    t = _checks.check_tensor(target, _FN, "target", 2)
    w = _checks.check_optional_tensor(weight, _FN, "weight", 3)
    index = _checks.check_int(ignore_index, _FN, "ignore_index", 5, symint=True)
    _checks.check_float(label_smoothing, _FN, "label_smoothing", 6)
    _checks.check_normalizer(normalizer, mode, caller)
    same_device(x.device if device is None else device, target=t, weight=w)
    index, eps, _ = _checks.cross_entropy_arguments(
        x, t, _slice_stand_in(w, x), index, label_smoothing, mode, shard=True
    )
    probability = x.shape == t.shape
    return CrossEntropyCall(mode, index, eps, probability, options=options or LogitOptions())


def _slice_stand_in(weight: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A class weight of another shape than this rank's slice ``(V_r,)`` may be all ``V`` weights, which only
    the agreement table tells (``_consensus``): the shard's checks see a meta slice of its dtype instead."""
    if weight is None or x.dim() == 0 or tuple(weight.shape) == (x.shape[class_dim(x)],):
        return weight
    stand_in = torch.empty(x.shape[class_dim(x)], dtype=weight.dtype, device="meta")
    return stand_in.requires_grad_(weight.requires_grad)


def weight_shape_of(weight: torch.Tensor | None) -> tuple[int, ...] | None:
    """The class weight's shape, for the agreement table (None without a weight)."""
    return None if weight is None else tuple(weight.shape)


def own_slice(weight: torch.Tensor | None, shard: Shard, classes: int) -> torch.Tensor | None:
    """This rank's slice ``(V_r,)`` of a class weight that holds all ``V`` classes (the ranks checked it is
    one or the other). Gathered at the shard's offset on the device: no host read, differentiable."""
    if weight is None or weight.shape[0] == classes:
        return weight
    return weight.index_select(0, torch.arange(classes, device=weight.device) + shard.offset.to(weight.device))


def same_device(device: torch.device, **others: torch.Tensor | None) -> None:
    """Every tensor argument lives on ``input``'s ``device`` (``RuntimeError`` naming the first that does not)."""
    for name, other in others.items():
        if other is not None and other.device != device:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but {name} is on {other.device} and input on {device}"
            )


def loss_dtypes(
    x: torch.Tensor, call: CrossEntropyCall, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.dtype | None, ...]:
    """The dtypes the loss computes from: of ``input``, of probability targets, of ``weight`` (None: absent)."""
    return (x.dtype, target.dtype if call.probability else None, weight.dtype if weight is not None else None)
