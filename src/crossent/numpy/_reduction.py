"""The one place ``crossent.numpy`` chooses and applies a reduction (mirrors ``torch/nn/_reduction.py``).

The legacy ``size_average``/``reduce`` pair overrides ``reduction`` (``None`` counts as True) and warns
like torch; ``'elementwise_mean'`` is a deprecated alias of ``'mean'``; any other string raises
``ValueError`` before an array is looked at.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from ._common import upstream_grad

Reduction = Literal["none", "mean", "sum"]

# Warnings point at the user's call: warn() <- helper <- resolve_* <- public function <- its
# ieee_arithmetic wrapper <- caller.
_USER_FRAME = 5

KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> Reduction:
    """The reduction named by torch's deprecated ``size_average``/``reduce`` pair, with torch's warning."""
    averaged = True if size_average is None else size_average
    reduced = True if reduce is None else reduce
    result: Reduction = ("mean" if averaged else "sum") if reduced else "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{result}' instead.",
        UserWarning,
        stacklevel=_USER_FRAME,
    )
    return result


def _checked_reduction(reduction: object) -> Reduction:
    """``reduction`` when it names one, else torch's ValueError."""
    if reduction == "elementwise_mean":
        warnings.warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            UserWarning,
            stacklevel=_USER_FRAME,
        )
        return "mean"
    if reduction == "none" or reduction == "mean" or reduction == "sum":
        return reduction
    raise ValueError(f"{reduction} is not a valid value for reduction")


def resolve_reduction(reduction: object, size_average: bool | None, reduce: bool | None) -> Reduction:
    """The reduction a loss applies: the legacy pair when either is given, else ``reduction``."""
    if size_average is not None or reduce is not None:
        return _legacy_reduction(size_average, reduce)
    return _checked_reduction(reduction)


def resolve_kl_reduction(reduction: object, size_average: bool | None, reduce: bool | None) -> tuple[Reduction, bool]:
    """``kl_div``'s reduction, and whether the result is then divided by ``input.shape[0]``.

    ``'batchmean'`` sums first. As in torch, the division keys on the ``reduction`` string even when
    the legacy pair overrode it, and ``'mean'`` warns that it is not the mathematical KL divergence.
    """
    batchmean = reduction == "batchmean"
    if size_average is not None or reduce is not None:
        return _legacy_reduction(size_average, reduce), batchmean
    if reduction == "mean":
        warnings.warn(KL_MEAN_WARNING, UserWarning, stacklevel=_USER_FRAME - 1)
    return ("sum" if batchmean else _checked_reduction(reduction)), batchmean


def apply_reduction(loss: np.ndarray, reduction: Reduction, mean_divisor: float | np.ndarray) -> np.ndarray:
    """``loss`` itself (``'none'``), ``Σ loss`` (``'sum'``) or ``Σ loss / mean_divisor`` (``'mean'``)."""
    if reduction == "none":
        return loss
    total = np.sum(loss)
    return np.asarray(total if reduction == "sum" else total / mean_divisor)


def reduction_grad(
    grad_output: object,
    reduction: Reduction,
    mean_divisor: float | np.ndarray,
    loss_shape: tuple[int, ...],
    dtype: np.dtype,
) -> np.ndarray:
    """``grad_output · ∂ reduced / ∂ loss``, one entry per element of the unreduced loss.

    ``grad_output`` is a scalar, or (``'none'`` only) an array of the unreduced loss's shape.
    ``'sum'`` passes it to every element, ``'mean'`` divides it by ``mean_divisor``.
    """
    if reduction == "none":
        return upstream_grad(grad_output, loss_shape, dtype)
    grad = upstream_grad(grad_output, (), dtype)
    if reduction == "mean":
        grad = grad / mean_divisor
    return np.broadcast_to(grad, loss_shape)
