"""Reduction rules, decided once for the whole library.

* ``'none'``: the per-element loss.
* ``'sum'``: its sum.
* ``'mean'``: class-index cross-entropy and NLL divide by the total target weight ``W = sum_n w[y_n]``
  over kept positions; probability-target cross-entropy divides by the number of positions; BCE,
  BCE-with-logits and KL divide by the number of elements.
* ``'batchmean'`` (``kl_div`` only): divides by ``input.size(0)``.

Legacy ``size_average`` / ``reduce`` override ``reduction`` exactly as in ``torch.nn._reduction``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Literal, cast, overload

import torch

Reduction = Literal["none", "mean", "sum"]
KLReduction = Literal["none", "mean", "sum", "batchmean"]
_VALID = ("none", "mean", "sum")


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> Reduction:
    """The reduction string that legacy ``size_average`` / ``reduce`` stand for (``None`` counts as True)."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    ret: Reduction = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{ret}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return ret


def resolve(
    reduction: object,
    size_average: bool | None = None,
    reduce: bool | None = None,
    *,
    allow_batchmean: bool = False,
) -> Reduction:
    """Validate ``reduction`` (after applying legacy arguments) and return the canonical string."""
    if size_average is not None or reduce is not None:
        return legacy_reduction(size_average, reduce)
    if reduction == "elementwise_mean":
        warnings.warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            UserWarning,
            stacklevel=3,
        )
        return "mean"
    if reduction in _VALID or (allow_batchmean and reduction == "batchmean"):
        return cast(Reduction, reduction)  # 'batchmean' too, for kl_div
    raise ValueError(f"{reduction} is not a valid value for reduction")


def reduce(loss: torch.Tensor, reduction: str, divisor: torch.Tensor | float | None = None) -> torch.Tensor:
    """Apply ``reduction`` to the per-element ``loss``; ``'mean'`` divides the sum by ``divisor``.

    ``divisor`` defaults to ``loss.numel()``. An empty ``'mean'`` is ``0/0 = nan``, as in torch.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / (loss.numel() if divisor is None else divisor)


@overload
def upstream(
    grad_output: torch.Tensor, reduction: str, divisor: torch.Tensor | float | None, shape: tuple[int, ...]
) -> torch.Tensor: ...


@overload
def upstream(
    grad_output: float, reduction: str, divisor: torch.Tensor | float | None, shape: tuple[int, ...]
) -> torch.Tensor | float: ...


def upstream(
    grad_output: torch.Tensor | float, reduction: str, divisor: torch.Tensor | float | None, shape: tuple[int, ...]
) -> torch.Tensor | float:
    """``d output / d loss_n`` times ``grad_output``: the gradient of each element's loss, as ``reduce`` shapes it.

    ``'none'`` reshapes ``grad_output`` to ``shape``; ``'sum'`` is ``grad_output`` (0-dim, broadcast);
    ``'mean'`` divides it by ``divisor``. A number stays a number unless a tensor divides it.
    """
    if reduction == "none":
        return torch.as_tensor(grad_output).reshape(shape)
    if reduction == "sum":
        return grad_output
    return grad_output / (math.prod(shape) if divisor is None else divisor)


def divisor(normalizer: torch.Tensor | float | None, acc: torch.dtype) -> torch.Tensor | float | None:
    """A ``normalizer=`` as the divisor of a summed loss: a 0-dim ``acc`` tensor, a float, or None."""
    if isinstance(normalizer, torch.Tensor):
        return normalizer.detach().reshape(()).to(acc)
    return None if normalizer is None else float(normalizer)


def output(
    reduction: Reduction,
    normalizer: torch.Tensor | float | None,
    acc: torch.dtype,
    mean_divisor: Callable[[], torch.Tensor] | None,
) -> tuple[Reduction, torch.Tensor | float | None]:
    """How a loss's output is formed: ``(reduction, divisor)`` for ``reduce`` and ``upstream``.

    A ``normalizer`` divides the summed loss, whichever reduction is named; otherwise ``'mean'``
    divides by ``mean_divisor()`` (None: not known yet, e.g. before a collective).
    """
    div = divisor(normalizer, acc)
    if div is None and reduction == "mean" and mean_divisor is not None:
        div = mean_divisor()
    return ("mean" if div is not None else reduction), div
