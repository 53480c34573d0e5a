"""Per-rank argument checks for vocab-parallel cross-entropy, with torch's exception classes.

These mirror ``crossent.functional.cross_entropy`` for a rank's shard ``(N, V_local, d1..dK)``,
except for two checks that need the other ranks and so run collectively
(``crossent.distributed._consensus``): class-index targets in ``[0, V)``, and ranks agreeing with
each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossent import _checks
from crossent._reduction import resolve as resolve_reduction
from crossent.distributed.normalization import check_normalizer
from crossent.ops._layout import class_dim


@dataclass(frozen=True)
class CrossEntropySpec:
    """What one rank was asked to compute, after validation."""

    probability: bool  # class-probability targets (sharded like input) instead of class ids
    reduction: str  # 'none' | 'mean' | 'sum'
    ignore_index: int
    label_smoothing: float  # clipped to [0, 1]
    weighted: bool


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
) -> CrossEntropySpec:
    """Validate one rank's arguments; raises what ``torch.nn.functional.cross_entropy`` raises for the same shard.

    ``device``: where ``target`` and ``weight`` must be (default: ``input``'s device; the linear loss
    passes meta logits and the hidden states' device).
    """
    resolved = resolve_reduction(reduction)
    x = _checks.check_tensor(input, "cross_entropy_loss", "input", 1)
    t = _checks.check_tensor(target, "cross_entropy_loss", "target", 2)
    w = _checks.check_optional_tensor(weight, "cross_entropy_loss", "weight", 3)
    index = _checks.check_int(ignore_index, "cross_entropy_loss", "ignore_index", 5, symint=True)
    smoothing = _checks.check_float(label_smoothing, "cross_entropy_loss", "label_smoothing", 6)
    check_normalizer(normalizer, resolved, caller)
    same_device(x.device if device is None else device, target=t, weight=w)
    probability = x.shape == t.shape
    if probability:
        if not t.is_floating_point():
            raise RuntimeError(
                f"Expected floating point type for target with class probabilities, got {_checks.dtype_name(t.dtype)}"
            )
        if index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        if x.dim() == 0:
            raise IndexError("Dimension specified as 1 but tensor has no dimensions")
        _check_shard_weight(w, x)
        eps = _checks.smoothing(smoothing)
        _checks.check_floating(x, _softmax_kernel_name(x))
    else:
        eps = _checks.smoothing(smoothing)
        if x.dim() == 0:
            # torch's log_softmax over the class dim 1 of a 0-dim input
            raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
        _checks.check_floating(x, _softmax_kernel_name(x))
        _checks.class_index_shapes(_with_a_class(x), t)
        if eps > 0 and x.dim() == 1 and t.dim() == 1:
            raise RuntimeError("output with shape [] doesn't match the broadcast shape [1]")
        _check_shard_weight(w, x)
        _checks.class_index_dtypes(x, t, w, "nll_loss_out_frame")
    return CrossEntropySpec(probability, resolved, index, eps, w is not None)


def same_device(device: torch.device, **others: torch.Tensor | None) -> None:
    """Every tensor argument lives on ``input``'s ``device`` (``RuntimeError`` naming the first that does not)."""
    for name, other in others.items():
        if other is not None and other.device != device:
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but {name} is on {other.device} and input on {device}"
            )


def loss_dtypes(
    x: torch.Tensor, spec: CrossEntropySpec, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.dtype | None, ...]:
    """The dtypes the loss computes from: of ``input``, of probability targets, of ``weight`` (None: absent)."""
    return (x.dtype, target.dtype if spec.probability else None, weight.dtype if weight is not None else None)


def batch_shape(x: torch.Tensor) -> tuple[int, ...]:
    """``input``'s shape without its class dimension: ``(N, d1, ..., dK)``, or ``()`` for ``(V_local,)``."""
    return tuple(x.shape[:1] + x.shape[2:]) if x.dim() > 1 else ()


def _with_a_class(x: torch.Tensor) -> torch.Tensor:
    """``x``, or a meta stand-in with one class where this rank's shard holds none.

    The target shape rules are about the global logits: a shard may be empty along the class
    dimension, which says nothing about the whole vocabulary (torch refuses targets for K-dim inputs
    without classes).
    """
    if x.dim() < 2 or x.shape[1] > 0:
        return x
    return torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype, device="meta")


def _softmax_kernel_name(x: torch.Tensor) -> str:
    """The ATen kernel torch names when log_softmax over the class dim gets a non-float input."""
    return "log_softmax_lastdim_kernel_impl" if class_dim(x) == x.dim() - 1 else "log_softmax_kernel_impl"


def _check_shard_weight(weight: torch.Tensor | None, x: torch.Tensor) -> None:
    """The class weight is sharded like the class dimension: this rank's slice, ``(V_local,)``."""
    if weight is None:
        return
    local = x.shape[class_dim(x)]
    if weight.dim() != 1 or weight.numel() != local:
        raise RuntimeError(
            f"weight must be this rank's slice of the class weights, of shape [{local}] like the class "
            f"dimension of input, but got weight tensor of shape: {list(weight.shape)}"
        )
