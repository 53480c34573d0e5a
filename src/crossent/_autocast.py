"""torch's autocast policy for the cross-entropy family, applied once, where each public function starts.

Under ``torch.autocast`` torch runs these losses in float32, whatever the autocast dtype:

==================================  ===========================  ===============================
op                                  CPU                          CUDA (and other devices)
==================================  ===========================  ===============================
cross_entropy, nll_loss, kl_div,    float32                      float32
binary_cross_entropy_with_logits
binary_cross_entropy                float32                      refused (unsafe to autocast)
softmax, log_softmax                as given                     float32 unless ``dtype=`` is given
linear_cross_entropy                matmul in the autocast       matmul in the autocast dtype,
                                    dtype, loss in float32       loss in float32
==================================  ===========================  ===============================

"float32" means what torch's autocast does: each floating tensor argument on the autocast device
that is not float64 is cast to float32 (a differentiable cast, so gradients come back in the
caller's dtype), and float64 stays float64. ``crossent._seam`` applies this where each public
function starts and runs the body with autocast off, so no internal op (a matmul, an einsum) is
re-cast, on the caller's thread or on any worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# (name, position): where an argument sits in the call; position None means keyword-only
Arg = tuple[str, int | None]

_BCE_UNSAFE = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
    "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast."
)


@dataclass(frozen=True)
class Policy:
    """What autocast does to one op's arguments on one kind of device."""

    fp32: tuple[Arg, ...] = ()  # floating arguments cast to float32 (float64 kept)
    lower: tuple[Arg, ...] = ()  # floating arguments cast to the autocast dtype (float64 kept)
    default_dtype: Arg | None = None  # a ``dtype=`` argument set to float32 when not given
    refused: str | None = None  # the op raises this under autocast
    extra: tuple[tuple[str, object], ...] = ()  # keyword arguments added to the call


_INPUT_TARGET_WEIGHT = (("input", 0), ("target", 1), ("weight", 2))
_CROSS_ENTROPY = Policy(fp32=_INPUT_TARGET_WEIGHT)
_SOFTMAX_CUDA = Policy(default_dtype=("dtype", 3))
_LINEAR = Policy(
    lower=(("input", 0), ("linear_weight", 1), ("linear_bias", None)),
    fp32=(("target", 2), ("weight", None)),
    extra=(("_logits_dtype", torch.float32),),
)

# op -> (CPU policy, policy elsewhere)
POLICIES: dict[str, tuple[Policy | None, Policy | None]] = {
    "cross_entropy": (_CROSS_ENTROPY, _CROSS_ENTROPY),
    "nll_loss": (_CROSS_ENTROPY, _CROSS_ENTROPY),
    "kl_div": (Policy(fp32=(("input", 0), ("target", 1))),) * 2,
    "binary_cross_entropy_with_logits": (Policy(fp32=(*_INPUT_TARGET_WEIGHT, ("pos_weight", 6))),) * 2,
    "binary_cross_entropy": (Policy(fp32=_INPUT_TARGET_WEIGHT), Policy(refused=_BCE_UNSAFE)),
    "softmax": (None, _SOFTMAX_CUDA),
    "log_softmax": (None, _SOFTMAX_CUDA),
    "linear_cross_entropy": (_LINEAR, _LINEAR),
}


def _eligible(value: object, device_type: str) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.dtype != torch.float64
        and value.device.type == device_type
    )


def apply(op: str, device_type: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Rewrite the arguments of a call of ``op`` on ``device_type`` in place, as autocast would."""
    cpu_policy, other_policy = POLICIES[op]
    policy = cpu_policy if device_type == "cpu" else other_policy
    if policy is None:
        return
    if policy.refused is not None:
        raise RuntimeError(policy.refused)

    def get(arg: Arg) -> Any:
        name, position = arg
        return args[position] if position is not None and position < len(args) else kwargs.get(name)

    def put(arg: Arg, value: Any) -> None:
        name, position = arg
        if position is not None and position < len(args):
            args[position] = value
        else:
            kwargs[name] = value

    lower = torch.get_autocast_dtype(device_type)
    for casts, dtype in ((policy.lower, lower), (policy.fp32, torch.float32)):
        for arg in casts:
            if _eligible(get(arg), device_type):
                put(arg, get(arg).to(dtype))
    if policy.default_dtype is not None and get(policy.default_dtype) is None:
        if _eligible(get(("input", 0)), device_type):
            put(policy.default_dtype, torch.float32)
    kwargs.update(policy.extra)
