"""Binary cross-entropy between probabilities and targets in [0, 1], and its gradient."""

from __future__ import annotations

import numpy as np

from ._common import ieee_arithmetic, optional_array, require_array, require_broadcastable_to, require_floating
from ._reduction import apply_reduction, reduction_grad, resolve_reduction

# torch clamps each log at -100 so that the loss stays finite (at most 100·w) and 0·log 0 is 0.
_LOG_FLOOR = -100.0
# torch's backward divides by max(x(1-x), EPS) with EPS = 1e-12 stored as a float32.
_GRAD_DENOMINATOR_FLOOR = float(np.float32(1e-12))


def _require_unit_interval(values: np.ndarray, name: str) -> None:
    outside = ~((values >= 0) & (values <= 1))  # NaN counts as outside, as in torch
    if outside.any():
        raise RuntimeError(f"all elements of {name} should be between 0 and 1 (found {values[outside][0]})")


def _operands(input: object, target: object, weight: object) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked ``input``, ``target`` and ``weight``, in torch's order of checks."""
    x = require_array(input, "input", "binary_cross_entropy")
    t = require_array(target, "target", "binary_cross_entropy")
    w = optional_array(weight, "weight", "binary_cross_entropy")
    if t.shape != x.shape:
        raise ValueError(
            f"Using a target size ({t.shape}) that is different to the input size ({x.shape}) is deprecated. "
            "Please ensure they have the same size."
        )
    if w is not None:
        require_broadcastable_to(w, x.shape, "weight")
    require_floating(x, "binary_cross_entropy")
    if t.dtype != x.dtype:
        raise RuntimeError(f"Found dtype {t.dtype} but expected {x.dtype}")
    _require_unit_interval(x, "input")
    _require_unit_interval(t, "target")
    return x, t, w


@ieee_arithmetic
def binary_cross_entropy(
    input: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> np.ndarray:
    r"""Binary cross-entropy between predicted probabilities ``x`` and targets ``y``, both in [0, 1].

    Same arguments and results as ``torch.nn.functional.binary_cross_entropy``. Unreduced, elementwise:

    .. math:: \ell = -w\,\big[y \max(\log x, -100) + (1-y) \max(\log(1-x), -100)\big]

    Each log is clamped at -100 before it is multiplied, so the loss is finite even at ``x = 0`` or 1.
    ``'sum'`` is :math:`\sum \ell`; ``'mean'`` divides it by the number of elements (weights are not
    normalised). Values outside [0, 1] (or NaN) raise RuntimeError.

    Shape:
        ======  ========================================================
        input   any shape ``(*)``
        target  ``(*)``, the input's shape and dtype
        weight  broadcastable to ``(*)`` without enlarging it
        output  ``'none'``: ``(*)``; else ``()``. The input's dtype
        ======  ========================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import binary_cross_entropy
        >>> binary_cross_entropy(np.array([0.9, 0.0]), np.array([1.0, 1.0]), reduction="none")
        array([  0.10536052, 100.        ])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    x, y, w = _operands(input, target, weight)
    # log(1 - x) as log1p(-x): exact for x near 0.
    loss = -(y * np.maximum(np.log(x), _LOG_FLOOR) + (1 - y) * np.maximum(np.log1p(-x), _LOG_FLOOR))
    if w is not None:
        loss = (loss * w).astype(x.dtype)
    return apply_reduction(loss, mode, x.size)


@ieee_arithmetic
def binary_cross_entropy_grad(
    input: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> np.ndarray:
    r"""Gradient of :func:`binary_cross_entropy` with respect to ``input``, for an upstream gradient ``g``.

    .. math:: \frac{\partial L}{\partial x} = G\, w\, \frac{x - y}{\max(x(1-x),\ 10^{-12})}

    with :math:`G = g` (``'none'``, ``'sum'``) or :math:`g / \mathrm{numel}` (``'mean'``). The gradient
    ignores the forward's -100 clamp: at ``x = 0, y = 1`` it is about ``-1e12``, as in torch.

    Shape:
        ===========  ======================================================
        input        as :func:`binary_cross_entropy`
        target       as :func:`binary_cross_entropy`
        grad_output  a scalar, or (``'none'``) the input's shape
        output       the input's shape and dtype
        ===========  ======================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import binary_cross_entropy_grad
        >>> binary_cross_entropy_grad(np.array([0.8, 0.5]), np.array([1.0, 0.0]), reduction="sum")
        array([-1.25,  2.  ])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    x, y, w = _operands(input, target, weight)
    upstream = reduction_grad(grad_output, mode, x.size, x.shape, x.dtype)
    # d/dx of -[y log x + (1-y) log(1-x)] = (x - y) / (x(1-x)).
    grad = upstream * (x - y) / np.maximum(x * (1 - x), _GRAD_DENOMINATOR_FLOOR)
    if w is not None:
        grad = grad * w
    return grad.astype(x.dtype)
