"""Softmax and log-softmax along one dimension, and their gradients."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

from ._common import ieee_arithmetic, require_array, require_floating, upstream_grad, wrap_dim

# Frames between warnings.warn in _operand and the user's call of a *_grad function.
_GRAD_STACKLEVEL = 4


def _operand(
    fn_name: str, input: object, dim: int | None, dtype: npt.DTypeLike | None, stacklevel: int
) -> tuple[np.ndarray, int]:
    """The array to normalise (cast to ``dtype`` first, as torch does) and the axis to normalise over."""
    x = require_array(input, "input", fn_name)
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {fn_name} has been deprecated. "
            "Change the call to include dim=X as an argument.",
            UserWarning,
            stacklevel=stacklevel,
        )
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if dtype is not None:
        x = x.astype(dtype)
    require_floating(x, fn_name)
    return x, wrap_dim(dim, x.ndim, fn_name)


def log_softmax_of(x: np.ndarray, dim: int) -> np.ndarray:
    """``x - log Σ exp(x)`` along ``dim`` of a floating array, ``dim`` already checked."""
    slices = np.atleast_1d(x)  # a 0-d array is one slice of length 1; its log-softmax is 0
    # log-sum-exp: after subtracting the slice maximum no exponent exceeds 0, so exp never overflows.
    # A +inf or NaN maximum makes the whole slice NaN, and so does an all -inf slice (-inf - -inf),
    # as in torch. initial= lets empty slices through.
    shifted = slices - np.max(slices, axis=dim, keepdims=True, initial=-np.inf)
    return (shifted - np.log(np.sum(np.exp(shifted), axis=dim, keepdims=True))).reshape(x.shape)


def log_softmax_backward(grad_output: np.ndarray, output: np.ndarray, dim: int) -> np.ndarray:
    """``∂L/∂x`` from ``g = ∂L/∂y`` and the forward result ``y = log_softmax(x)``."""
    g, y = np.atleast_1d(grad_output, output)
    # ∂y_j/∂x_i = [i = j] - softmax(x)_i, and softmax(x) = exp(y).
    return (g - np.exp(y) * np.sum(g, axis=dim, keepdims=True)).reshape(output.shape)


def softmax_of(x: np.ndarray, dim: int) -> np.ndarray:
    """``exp(x) / Σ exp(x)`` along ``dim`` of a floating array, ``dim`` already checked."""
    slices = np.atleast_1d(x)
    # Subtracting the slice maximum cancels in the ratio and keeps exp from overflowing.
    exps = np.exp(slices - np.max(slices, axis=dim, keepdims=True, initial=-np.inf))
    return (exps / np.sum(exps, axis=dim, keepdims=True)).reshape(x.shape)


def softmax_backward(grad_output: np.ndarray, output: np.ndarray, dim: int) -> np.ndarray:
    """``∂L/∂x`` from ``g = ∂L/∂s`` and the forward result ``s = softmax(x)``."""
    g, s = np.atleast_1d(grad_output, output)
    # ∂s_j/∂x_i = s_j ([i = j] - s_i).
    return (s * (g - np.sum(g * s, axis=dim, keepdims=True))).reshape(output.shape)


@ieee_arithmetic
def log_softmax(
    input: np.ndarray, dim: int | None = None, _stacklevel: int = 3, dtype: npt.DTypeLike | None = None
) -> np.ndarray:
    r"""Logarithm of the softmax along ``dim``, computed stably.

    .. math:: y_i = x_i - \log \sum_j \exp(x_j)

    Same arguments and results as ``torch.nn.functional.log_softmax``: ``dim=None`` warns and picks 0 for
    0-, 1- and 3-d input and 1 otherwise; ``dtype`` casts the input before the operation. A slice with a
    ``+inf`` or ``NaN`` entry, or with every entry ``-inf``, comes out all ``NaN``; a ``-inf`` entry
    among finite ones gives ``-inf``.

    Shape:
        ========  ======================
        input     any shape ``(*)``
        output    ``(*)``, same as input
        ========  ======================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import log_softmax
        >>> log_softmax(np.array([1000.0, 0.0, -1000.0]), dim=0)
        array([    0., -1000., -2000.])
    """
    x, axis = _operand("log_softmax", input, dim, dtype, _stacklevel + 1)
    return log_softmax_of(x, axis)


@ieee_arithmetic
def log_softmax_grad(
    input: np.ndarray, grad_output: object, dim: int | None = None, dtype: npt.DTypeLike | None = None
) -> np.ndarray:
    r"""Gradient of :func:`log_softmax` with respect to ``input`` for an upstream gradient ``g``.

    .. math:: \frac{\partial L}{\partial x_i} = g_i - \mathrm{softmax}(x)_i \sum_j g_j

    Shape:
        ===========  ===============================================
        input        any shape ``(*)``
        grad_output  a scalar, or ``(*)``: the shape of the output
        output       ``(*)``, in ``input``'s dtype
        ===========  ===============================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import log_softmax_grad
        >>> log_softmax_grad(np.zeros(2), np.array([1.0, 0.0]), dim=0)
        array([ 0.5, -0.5])
    """
    x, axis = _operand("log_softmax", input, dim, dtype, _GRAD_STACKLEVEL)
    g = upstream_grad(grad_output, x.shape, x.dtype)
    return log_softmax_backward(g, log_softmax_of(x, axis), axis).astype(input.dtype)


@ieee_arithmetic
def softmax(
    input: np.ndarray, dim: int | None = None, _stacklevel: int = 3, dtype: npt.DTypeLike | None = None
) -> np.ndarray:
    r"""Softmax along ``dim``: exponentials normalised to sum to 1, computed stably.

    .. math:: s_i = \frac{\exp(x_i)}{\sum_j \exp(x_j)}

    Same arguments and results as ``torch.nn.functional.softmax`` (see :func:`log_softmax` for ``dim``,
    ``dtype`` and non-finite slices).

    Shape:
        ========  ======================
        input     any shape ``(*)``
        output    ``(*)``, same as input
        ========  ======================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import softmax
        >>> softmax(np.array([[0.0, np.log(3.0)]]), dim=1)
        array([[0.25, 0.75]])
    """
    x, axis = _operand("softmax", input, dim, dtype, _stacklevel + 1)
    return softmax_of(x, axis)


@ieee_arithmetic
def softmax_grad(
    input: np.ndarray, grad_output: object, dim: int | None = None, dtype: npt.DTypeLike | None = None
) -> np.ndarray:
    r"""Gradient of :func:`softmax` with respect to ``input`` for an upstream gradient ``g``.

    .. math:: \frac{\partial L}{\partial x_i} = s_i \Big(g_i - \sum_j g_j s_j\Big), \quad s = \mathrm{softmax}(x)

    Shape:
        ===========  ===============================================
        input        any shape ``(*)``
        grad_output  a scalar, or ``(*)``: the shape of the output
        output       ``(*)``, in ``input``'s dtype
        ===========  ===============================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import softmax_grad
        >>> softmax_grad(np.zeros(2), np.array([1.0, 0.0]), dim=0)
        array([ 0.25, -0.25])
    """
    x, axis = _operand("softmax", input, dim, dtype, _GRAD_STACKLEVEL)
    g = upstream_grad(grad_output, x.shape, x.dtype)
    return softmax_backward(g, softmax_of(x, axis), axis).astype(input.dtype)
