"""Per-class weights from class counts, for the ``weight=`` argument of the cross-entropy family."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["class_weights"]

Method = Literal["inverse", "inverse_sqrt", "effective"]
_METHODS = ("inverse", "inverse_sqrt", "effective")


def class_weights(
    counts: torch.Tensor | Sequence[float], *, method: Method = "inverse", beta: float = 0.999
) -> torch.Tensor:
    r"""Per-class weights from the number of examples of each class, normalised to mean 1.

    ::

        'inverse'       w_c ∝ 1 / n_c
        'inverse_sqrt'  w_c ∝ 1 / sqrt(n_c)
        'effective'     w_c ∝ (1 - beta) / (1 - beta^n_c)     (class-balanced loss, Cui et al. 2019)

    then ``w = C * w / sum(w)``: the mean over the ``C`` classes is 1, so a loss with ``reduction='sum'``
    keeps its scale on balanced data, and ``'mean'`` (which divides by the summed weights of the
    targets) is unchanged by the normalisation. ``'effective'`` computes ``1 - beta^n`` as
    ``-expm1(n log beta)``; ``beta -> 0`` gives equal weights and ``beta -> 1`` approaches ``'inverse'``.

    A class with count 0 never occurs and has no finite inverse weight: it raises ``ValueError``
    naming it; drop the class, or give it a count (e.g. 1).

    Args:
        counts: non-negative class counts (ints or floats), a 1-D tensor or sequence.
        method: ``'inverse'`` | ``'inverse_sqrt'`` | ``'effective'``.
        beta: for ``'effective'``, in ``[0, 1)``.

    Returns:
        float32 weights (float64 when ``counts`` is float64) on ``counts``' device.

    Shape:
        ==========  =======
        counts      ``(C,)``
        output      ``(C,)``
        ==========  =======

    Example:
        >>> import torch, crossent
        >>> w = crossent.class_weights([900, 90, 10])
        >>> w
        tensor([0.0297, 0.2970, 2.6733])
        >>> crossent.class_weights([900, 90, 10], method="effective", beta=0.99)
        tensor([0.2284, 0.3836, 2.3880])
        >>> logits, labels = torch.zeros(2, 3), torch.tensor([0, 2])
        >>> crossent.cross_entropy(logits, labels, weight=w)
        tensor(1.0986)
    """
    if method not in _METHODS:
        raise ValueError(
            f"class_weights(): unknown method {method!r}; expected one of {', '.join(map(repr, _METHODS))}"
        )
    if method == "effective":
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ValueError(f"class_weights(): beta must be in [0, 1) for method='effective', got {beta!r}")
    if isinstance(counts, torch.Tensor):
        if counts.is_complex() or counts.dtype == torch.bool:
            raise TypeError(f"class_weights(): counts must be real numbers, got a {counts.dtype} tensor")
        c = counts.detach()
    else:
        try:
            c = torch.as_tensor(counts)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"class_weights(): counts must be a 1-D tensor or sequence of numbers ({e})") from None
        if c.dtype == torch.bool or c.is_complex():
            raise TypeError(f"class_weights(): counts must be real numbers, got {c.dtype}")
    if c.dim() != 1:
        raise ValueError(f"class_weights(): counts must be 1-D (one count per class), got shape {list(c.shape)}")
    if c.numel() == 0:
        raise ValueError("class_weights(): counts is empty; give one count per class")
    dtype = torch.float64 if c.dtype == torch.float64 else torch.float32
    n = c.to(torch.float64)  # computed in float64, returned in ``dtype``
    for what, bad in (("NaN", n.isnan()), ("infinite", n.isinf()), ("negative", n < 0), ("zero", n == 0)):
        if bool(bad.any()):
            classes = bad.nonzero().flatten().tolist()
            hint = (
                ": a class that never occurs has no finite inverse weight; drop it or give it a count"
                if what == "zero"
                else ""
            )
            raise ValueError(f"class_weights(): {what} counts for classes {classes}{hint}")
    if method == "inverse":
        w = 1 / n
    elif method == "inverse_sqrt":
        w = n.rsqrt()
    elif beta == 0:
        w = torch.ones_like(n)  # (1 - 0) / (1 - 0^n) = 1 for n > 0
    else:
        w = (1 - beta) / torch.expm1(n * math.log(beta)).neg()
    return (w * (n.numel() / w.sum())).to(dtype)
