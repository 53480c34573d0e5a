"""Kullback-Leibler divergence loss ``kl_div`` (log-probability input), and its gradient."""

from __future__ import annotations

import numpy as np

from ._common import ieee_arithmetic, require_array, shape_str, xlogy
from ._reduction import apply_reduction, reduction_grad, resolve_kl_reduction


def _operands(input: object, target: object, log_target: object) -> tuple[np.ndarray, np.ndarray, bool]:
    x = require_array(input, "input", "kl_div")
    t = require_array(target, "target", "kl_div")
    if not isinstance(log_target, bool):
        raise TypeError(f"kl_div(): argument 'log_target' must be bool, not {type(log_target).__name__}")
    if np.iscomplexobj(x) or np.iscomplexobj(t):
        raise RuntimeError(f"kl_div: Complex inputs not supported (got {x.dtype} and {t.dtype}).")
    if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(t.dtype, np.floating)):
        raise RuntimeError(f"kl_div: Integral inputs not supported (got {x.dtype} and {t.dtype}).")
    try:
        np.broadcast_shapes(x.shape, t.shape)
    except ValueError:
        raise RuntimeError(
            f"input of shape {shape_str(x.shape)} and target of shape {shape_str(t.shape)} do not broadcast"
        ) from None
    return x, t, log_target


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient over the axes along which its operand of ``shape`` was broadcast."""
    grad = np.sum(grad, axis=tuple(range(grad.ndim - len(shape))))
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    return np.sum(grad, axis=stretched, keepdims=True)


@ieee_arithmetic
def kl_div(
    input: np.ndarray,
    target: np.ndarray,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> np.ndarray:
    r"""Pointwise KL divergence ``KL(target || model)`` from the model's log-probabilities ``x``.

    Same arguments and results as ``torch.nn.functional.kl_div`` (note the argument order: the model's
    log-probabilities first). Unreduced, elementwise over the broadcast of ``input`` and ``target``:

    .. math:: \ell = t\,(\log t - x) \quad (0 \text{ where } t = 0), \qquad
              \ell = e^{t}\,(t - x) \quad \text{if log\_target}

    ``'sum'`` is :math:`\sum \ell`; ``'batchmean'`` divides it by ``input.shape[0]`` (the KL divergence
    per sample; a 0-d input is not divided); ``'mean'`` divides by the number of elements and warns,
    like torch, that this is not the KL divergence.

    Shape:
        ======  ================================================================
        input   any shape ``(*)``: log-probabilities
        target  broadcastable with ``(*)``: probabilities (log-probabilities if ``log_target``)
        output  ``'none'``: the broadcast shape; else ``()``. The promoted dtype
        ======  ================================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import kl_div
        >>> p, q = np.array([[1.0, 0.0, 0.0]]), np.array([[0.5, 0.2, 0.3]])
        >>> print(round(float(kl_div(np.log(q), p, reduction="batchmean")), 6))   # log 2
        0.693147
    """
    mode, batchmean = resolve_kl_reduction(reduction, size_average, reduce)
    x, t, log_target = _operands(input, target, log_target)
    loss = np.exp(t) * (t - x) if log_target else xlogy(t, t) - t * x
    reduced = apply_reduction(loss, mode, loss.size)
    return np.asarray(reduced / x.shape[0] if batchmean and x.ndim != 0 else reduced)


@ieee_arithmetic
def kl_div_grad(
    input: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> np.ndarray:
    r"""Gradient of :func:`kl_div` with respect to ``input``, for an upstream gradient ``g``.

    .. math:: \frac{\partial L}{\partial x} = -t\, G \quad\text{or}\quad -e^{t}\, G \ \text{if log\_target}

    with :math:`G = g` (``'none'``, ``'sum'``), :math:`g / \mathrm{numel}` (``'mean'``) or
    :math:`g / N` (``'batchmean'``), summed over any axes along which ``input`` was broadcast.

    Shape:
        ===========  ======================================================
        input        as :func:`kl_div`
        target       as :func:`kl_div`
        grad_output  a scalar, or (``'none'``) the broadcast shape
        output       the input's shape and dtype
        ===========  ======================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import kl_div_grad
        >>> kl_div_grad(np.zeros((2, 2)), np.array([[0.25, 0.75], [1.0, 0.0]]), reduction="batchmean")
        array([[-0.125, -0.375],
               [-0.5  ,  0.   ]])
    """
    mode, batchmean = resolve_kl_reduction(reduction, size_average, reduce)
    x, t, log_target = _operands(input, target, log_target)
    loss_shape = np.broadcast_shapes(x.shape, t.shape)
    upstream = reduction_grad(grad_output, mode, int(np.prod(loss_shape)), loss_shape, np.result_type(x, t))
    if batchmean and x.ndim != 0:
        upstream = upstream / x.shape[0]
    grad = -np.exp(t) * upstream if log_target else -t * upstream
    return _sum_to_shape(grad, x.shape).astype(x.dtype)
