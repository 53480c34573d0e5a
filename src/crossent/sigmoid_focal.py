"""The sigmoid focal loss (RetinaNet), with torchvision's semantics and a hand-written backward."""

from __future__ import annotations

import math

import torch

from crossent._checks import check_optional_tensor, check_tensor, dtype_name
from crossent._reduction import Reduction
from crossent.ops.sigmoid_focal import SigmoidFocalLoss

__all__ = ["sigmoid_focal_loss"]

_FN = "sigmoid_focal_loss"


def _check(
    input: object, target: object, gamma: object, alpha: object, pos_weight: object, reduction: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x = check_tensor(input, _FN, "input", 1)
    t = check_tensor(target, _FN, "target", 2)
    pw = check_optional_tensor(pos_weight, _FN, "pos_weight", 5)
    if t.shape != x.shape:
        raise ValueError(f"Target size ({t.size()}) must be the same as input size ({x.size()})")
    for name, tensor in (("input", x), ("target", t), ("pos_weight", pw)):
        if tensor is not None and not tensor.is_floating_point():
            raise TypeError(
                f"{_FN}(): '{name}' must be a floating-point tensor (logits, or float 0/1 targets), "
                f"got {dtype_name(tensor.dtype)}"
            )
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"{_FN}(): gamma must be a finite number >= 0, got {gamma!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha > 1:
        raise ValueError(
            f"{_FN}(): alpha must be a number in [0, 1], or negative for no alpha weighting, got {alpha!r}"
        )
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(
            f"Invalid Value for arg 'reduction': '{reduction}'. Supported reduction modes: 'none', 'mean', 'sum'"
        )
    if pw is not None:
        try:
            shape = torch.broadcast_shapes(pw.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"{_FN}(): pos_weight of shape {list(pw.shape)} does not broadcast to the input's shape "
                f"{list(x.shape)} (it is broadcast over the trailing dims, typically (C,) for (N, C))"
            )
        if pw.requires_grad:
            raise RuntimeError(f"{_FN}() is not differentiable with respect to 'pos_weight': it cannot require grad")
    return x, t, pw


def _autocast_fp32(tensor: torch.Tensor | None, device_type: str) -> torch.Tensor | None:
    """Autocast's float32 policy for one argument: floating, on the autocast device, not float64."""
    if tensor is None or tensor.dtype == torch.float64 or tensor.device.type != device_type:
        return tensor
    return tensor.to(torch.float32)


def sigmoid_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float = 0.25,
    pos_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""The sigmoid focal loss of RetinaNet on logits (multi-label), as ``torchvision.ops.sigmoid_focal_loss``.

    ::

        p    = sigmoid(x)
        ce   = binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction='none')
        p_t  = p * t + (1 - p) * (1 - t)
        l    = alpha_t * (1 - p_t)^gamma * ce,     alpha_t = alpha * t + (1 - alpha) * (1 - t)

    ``alpha < 0`` drops ``alpha_t`` (torchvision's ``alpha=-1``). With ``gamma=0``, ``alpha < 0`` and
    no ``pos_weight`` it is :func:`crossent.binary_cross_entropy_with_logits` (bit for bit against its
    PyTorch path, ``impl='torch'``). ``pos_weight`` multiplies the positive term of ``ce``, as in
    BCE-with-logits. Soft targets in [0, 1] are fine.

    Stable for any logit: ``ce`` uses BCE-with-logits' stable form and ``1 - p_t`` is computed as
    ``t * sigmoid(-x) + (1 - t) * sigmoid(x)``, so ``x = ±1e4`` gives finite values and gradients
    where the plain formula gives NaN. The backward is hand-written (gradients for ``input`` and for
    ``target`` when it requires grad) and first-order. Half-precision inputs are computed in float32
    and the result has the promoted dtype of ``input`` and ``target``; under ``torch.autocast`` the
    loss runs in float32 (as torch does for BCE-with-logits) and returns float32.

    Unlike torchvision, the default reduction is ``'mean'`` (as for the other losses here), and a bad
    ``gamma`` (negative), ``alpha`` (above 1) or ``reduction`` raises ``ValueError``.

    Reductions: ``'none'``; ``'sum'``; ``'mean'`` = sum / number of elements (torchvision's ``mean``;
    RetinaNet divides the sum by the number of positive anchors instead: use ``'sum'`` and divide).

    Args:
        input: logits, floating.
        target: same shape as ``input``; floating, 0/1 labels or soft targets.
        gamma: focusing exponent, ``>= 0``; 0 gives plain binary cross-entropy.
        alpha: weight of the positives in [0, 1] (negatives get ``1 - alpha``), or negative for none.
        pos_weight: positive-class weight broadcast over the trailing dims, typically ``(C,)``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.

    Shape:
        ==========  ================================
        input       ``(*)``
        target      ``(*)``, same as input
        pos_weight  broadcastable to ``(*)``, e.g. ``(C,)``
        output      scalar, or ``(*)`` for ``'none'``
        ==========  ================================

    Example:
        >>> import torch, crossent
        >>> x = torch.tensor([[2.0, -1.0, 0.5]]); y = torch.tensor([[1.0, 0.0, 1.0]])
        >>> crossent.sigmoid_focal_loss(x, y, reduction="none")
        tensor([[0.0005, 0.0170, 0.0169]])
        >>> crossent.sigmoid_focal_loss(x, y, gamma=0.0, alpha=-1.0)  # plain BCE-with-logits
        tensor(0.3048)
    """
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(
            f"crossent.{_FN} does not support torch.func transforms: its backward is hand-written and first-order. "
            "Call it outside the transform"
        )
    x, t, pw = _check(input, target, gamma, alpha, pos_weight, reduction)
    device_type = x.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        x32, t32, pw32 = (_autocast_fp32(a, device_type) for a in (x, t, pw))
        with torch.autocast(device_type, enabled=False):
            return SigmoidFocalLoss.apply(x32, t32, pw32, float(gamma), float(alpha), reduction)
    return SigmoidFocalLoss.apply(x, t, pw, float(gamma), float(alpha), reduction)
