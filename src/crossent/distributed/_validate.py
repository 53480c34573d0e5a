"""Per-rank argument checks for vocab-parallel cross-entropy, with torch's exception classes.

These mirror ``crossent.functional.cross_entropy`` for a rank's shard ``(N, V_local, d1..dK)``,
except for two checks that need the global class count and so run collectively
(``crossent.distributed._consensus``): targets in ``[0, V)``, and ranks agreeing with each other.
"""

from __future__ import annotations

import dataclasses
import math
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
    normalized: bool  # a normalizer replaces the reduction's divisor

    def options(self) -> tuple[object, ...]:
        """The fields every rank must agree on, for the consensus digest."""
        return dataclasses.astuple(self)


def positions(input: object) -> int:
    """``N * d1 * ... * dK`` (1 for an unbatched ``(V_local,)``); 0 when ``input`` has no class dim."""
    if not isinstance(input, torch.Tensor) or input.dim() == 0:
        return 0
    if input.dim() == 1:
        return 1
    return input.shape[0] * math.prod(input.shape[2:])


def device_of(input: object) -> torch.device:
    return input.device if isinstance(input, torch.Tensor) else torch.device("cpu")


def check_cross_entropy(
    input: object,
    target: object,
    weight: object,
    ignore_index: object,
    reduction: object,
    label_smoothing: object,
    normalizer: object,
    caller: str,
) -> CrossEntropySpec:
    """Validate one rank's arguments; raises what ``crossent.cross_entropy`` raises for the same shard."""
    resolved = resolve_reduction(reduction)
    x = _checks.check_tensor(input, "cross_entropy_loss", "input", 1)
    t = _checks.check_tensor(target, "cross_entropy_loss", "target", 2)
    index = _checks.check_int(ignore_index, "cross_entropy_loss", "ignore_index", 5)
    if weight is not None:
        weight = _checks.check_tensor(weight, "cross_entropy_loss", "weight", 3)
    check_normalizer(normalizer, resolved, caller)
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
        _check_shard_weight(weight, x)
        eps = _checks.smoothing(label_smoothing)
        _checks.check_floating(x, _softmax_kernel_name(x))
    else:
        eps = _checks.smoothing(label_smoothing)
        if x.dim() > 0:
            _checks.check_floating(x, _softmax_kernel_name(x))
        _checks.class_index_shapes(x, t)
        if eps > 0 and x.dim() == 1 and t.dim() == 1:
            raise RuntimeError("output with shape [] doesn't match the broadcast shape [1]")
        _check_shard_weight(weight, x)
        _checks.class_index_dtypes(x, t, weight, "nll_loss_out_frame")
    return CrossEntropySpec(probability, resolved, index, eps, weight is not None, normalizer is not None)


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
