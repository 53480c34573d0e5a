"""Per-rank argument checks for vocab-parallel cross-entropy: ``crossent._checks`` applied to a shard.

A rank sees ``(N, V_local, d1..dK)`` logits, so what differs from ``crossent.functional.cross_entropy``
is only what a shard changes: the class weight is this rank's slice ``(V_local,)``, a shard may hold no
class at all, and the two checks that need the other ranks run collectively (``_consensus``):
class-index targets in ``[0, V)``, and ranks agreeing with each other.
"""

from __future__ import annotations

import torch

from crossent import _checks
from crossent._reduction import resolve as resolve_reduction
from crossent.distributed.normalization import check_normalizer
from crossent.ops._layout import class_dim
from crossent.ops.cross_entropy import CrossEntropyCall

_FN = "cross_entropy_loss"


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
) -> CrossEntropyCall:
    """Validate one rank's arguments; raises what ``torch.nn.functional.cross_entropy`` raises for the same shard.

    ``device``: where ``target`` and ``weight`` must be (default: ``input``'s device; the linear loss
    passes meta logits and the hidden states' device).
    """
    mode = resolve_reduction(reduction)
    x = _checks.check_tensor(input, _FN, "input", 1)
    t = _checks.check_tensor(target, _FN, "target", 2)
    w = _checks.check_optional_tensor(weight, _FN, "weight", 3)
    index = _checks.check_int(ignore_index, _FN, "ignore_index", 5, symint=True)
    _checks.check_float(label_smoothing, _FN, "label_smoothing", 6)
    check_normalizer(normalizer, mode, caller)
    same_device(x.device if device is None else device, target=t, weight=w)
    probability = x.shape == t.shape
    if probability:
        # torch's own checks for probabilities, with the weight left to the shard's rule below
        index, eps, _ = _checks.cross_entropy_arguments(x, t, None, index, label_smoothing)
        _check_shard_weight(w, x)
    else:
        eps = _checks.smoothing(label_smoothing)
        if x.dim() == 0:  # torch's log_softmax over the class dim 1 of a 0-dim input
            raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
        _checks.check_floating(x, _checks.softmax_kernel_name(x, class_dim(x)))
        # the shape rules are about the global logits: a shard without classes says nothing of them
        _checks.class_index_shapes(_with_a_class(x), t)
        if eps > 0 and x.dim() == 1 and t.dim() == 1:
            raise RuntimeError("output with shape [] doesn't match the broadcast shape [1]")
        _check_shard_weight(w, x)
        _checks.class_index_dtypes(x, t, w, "nll_loss_out_frame")
    return CrossEntropyCall(mode, index, eps, probability)


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


def _with_a_class(x: torch.Tensor) -> torch.Tensor:
    """``x``, or a meta stand-in with one class where this rank's K-dim shard holds none (torch refuses
    targets for K-dim inputs without classes, which says nothing about the whole vocabulary)."""
    if x.dim() < 2 or x.shape[1] > 0:
        return x
    return torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype, device="meta")


def _check_shard_weight(weight: torch.Tensor | None, x: torch.Tensor) -> None:
    """The class weight is sharded like the class dimension: this rank's slice, ``(V_local,)``."""
    local = x.shape[class_dim(x)]
    if weight is not None and (weight.dim() != 1 or weight.numel() != local):
        raise RuntimeError(
            f"weight must be this rank's slice of the class weights, of shape [{local}] like the class "
            f"dimension of input, but got weight tensor of shape: {list(weight.shape)}"
        )
