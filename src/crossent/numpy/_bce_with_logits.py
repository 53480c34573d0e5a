"""Binary cross-entropy on logits (sigmoid folded in, computed stably), and its gradient."""

from __future__ import annotations

import numpy as np

from ._common import ieee_arithmetic, optional_array, require_array, require_broadcastable_to, require_floating
from ._reduction import apply_reduction, reduction_grad, resolve_reduction

_NAME = "binary_cross_entropy_with_logits"


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """``log σ(x) = min(x, 0) - log1p(exp(-|x|))``: no overflow for any x, and exact for large |x|."""
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``σ(x) = 1 / (1 + exp(-x))``; exp overflowing to inf gives the correct limit 0."""
    return 1 / (1 + np.exp(-x))


def _operands(
    input: object, target: object, weight: object, pos_weight: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Checked ``input``, ``target``, ``weight`` and ``pos_weight``."""
    x = require_array(input, "input", _NAME)
    t = require_array(target, "target", _NAME)
    w = optional_array(weight, "weight", _NAME)
    pw = optional_array(pos_weight, "pos_weight", _NAME)
    if t.shape != x.shape:
        raise ValueError(f"Target size ({t.shape}) must be the same as input size ({x.shape})")
    require_floating(x, "log_sigmoid")
    if not np.issubdtype(t.dtype, np.floating):
        raise RuntimeError(f"result type {x.dtype} can't be cast to the desired output type {t.dtype}")
    for name, array in (("pos_weight", pw), ("weight", w)):
        if array is not None:
            require_broadcastable_to(array, x.shape, name)
    return x, t, w, pw


@ieee_arithmetic
def binary_cross_entropy_with_logits(
    input: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: np.ndarray | None = None,
) -> np.ndarray:
    r"""Binary cross-entropy between ``σ(x)`` for logits ``x`` and targets ``y``, computed stably.

    Same arguments and results as ``torch.nn.functional.binary_cross_entropy_with_logits``. Unreduced,
    elementwise, with ``p = pos_weight`` (1 when absent):

    .. math:: \ell = -w\,\big[p\, y \log\sigma(x) + (1-y) \log(1-\sigma(x))\big]
                   = w\,\big[(1-y)\,x - (1 + (p-1)\,y) \log\sigma(x)\big]

    using :math:`\log(1-\sigma(x)) = \log\sigma(x) - x`. ``'sum'`` is :math:`\sum \ell`; ``'mean'`` divides
    it by the number of elements. Targets are not range-checked (soft or out-of-range targets work).

    Shape:
        ==========  =====================================================
        input       any shape ``(*)``: logits
        target      ``(*)``, floating
        weight      broadcastable to ``(*)`` without enlarging it
        pos_weight  broadcastable to ``(*)`` without enlarging it; typically ``(C,)`` for ``(N, C)``
        output      ``'none'``: ``(*)``; else ``()``. The **target's** dtype
        ==========  =====================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import binary_cross_entropy_with_logits
        >>> x, y = np.array([100.0, -100.0, 0.0]), np.array([0.0, 1.0, 0.5])
        >>> binary_cross_entropy_with_logits(x, y, reduction="none")
        array([100.        , 100.        ,   0.69314718])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    x, y, w, pw = _operands(input, target, weight, pos_weight)
    positive_scale = 1 if pw is None else 1 + (pw - 1) * y
    loss = (1 - y) * x - positive_scale * log_sigmoid(x)
    if w is not None:
        loss = loss * w
    return apply_reduction(loss.astype(y.dtype), mode, x.size)


@ieee_arithmetic
def binary_cross_entropy_with_logits_grad(
    input: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: np.ndarray | None = None,
) -> np.ndarray:
    r"""Gradient of :func:`binary_cross_entropy_with_logits` with respect to the logits.

    .. math:: \frac{\partial L}{\partial x} = G\, w\, \big[(1 + (p-1)\,y)\,\sigma(x) - p\, y\big]

    with :math:`G = g` (``'none'``, ``'sum'``) or :math:`g / \mathrm{numel}` (``'mean'``); without
    ``pos_weight`` this is :math:`G\,w\,(\sigma(x) - y)`.

    Shape:
        ===========  ======================================================
        input        as :func:`binary_cross_entropy_with_logits`
        target       as :func:`binary_cross_entropy_with_logits`
        grad_output  a scalar, or (``'none'``) the input's shape
        output       the input's shape and dtype
        ===========  ======================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import binary_cross_entropy_with_logits_grad
        >>> binary_cross_entropy_with_logits_grad(np.array([0.0, 0.0]), np.array([1.0, 0.0]))
        array([-0.25,  0.25])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    x, y, w, pw = _operands(input, target, weight, pos_weight)
    upstream = reduction_grad(grad_output, mode, x.size, x.shape, np.result_type(x, y))
    # d/dx log σ(x) = 1 - σ(x), so d/dx of (1-y)x - (1+(p-1)y) log σ(x) is (1+(p-1)y) σ(x) - p y.
    grad = sigmoid(x) - y if pw is None else (1 + (pw - 1) * y) * sigmoid(x) - pw * y
    if w is not None:
        grad = grad * w
    return (upstream * grad).astype(x.dtype)
