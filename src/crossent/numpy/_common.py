"""Argument checks and floating-point policy shared by the functions of ``crossent.numpy``.

Messages follow torch's wording where torch has one, with NumPy dtype names and the offending
value or shape spelled out.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


def ieee_arithmetic(fn: F) -> F:
    """Run ``fn`` with NumPy's floating-point warnings off.

    NumPy warns on ``log(0)``, ``0/0``, ``inf - inf`` and ``exp`` overflow; torch returns the IEEE
    result (``-inf``, ``nan``, ``inf``) silently, and so do we.
    """

    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return quiet  # type: ignore[return-value]


def xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x·log y`` with ``0·log y = 0`` for every non-NaN ``y`` (0 included), as ``torch.xlogy``."""
    return np.where((x == 0) & ~np.isnan(y), 0, x * np.log(y))


def shape_str(shape: tuple[int, ...]) -> str:
    """A shape the way torch prints one: ``[2, 3]``."""
    return "[" + ", ".join(str(size) for size in shape) + "]"


def require_array(value: object, name: str, fn_name: str) -> np.ndarray:
    """``value`` as an ndarray when it is one (or a NumPy scalar), else the TypeError torch raises for a
    non-Tensor: lists and Python numbers are not converted."""
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(f"{fn_name}(): argument '{name}' must be numpy.ndarray, not {type(value).__name__}")
    return np.asarray(value)


def optional_array(value: object, name: str, fn_name: str) -> np.ndarray | None:
    """``None`` or an ndarray (see :func:`require_array`)."""
    return None if value is None else require_array(value, name, fn_name)


def require_floating(array: np.ndarray, fn_name: str) -> None:
    """NotImplementedError for integer, bool or complex data, as torch's kernels raise."""
    if not np.issubdtype(array.dtype, np.floating):
        raise NotImplementedError(f"{fn_name} is not implemented for dtype {array.dtype}; pass a floating array")


def require_int(value: object, name: str, fn_name: str) -> int:
    """``value`` as an int; TypeError for floats, strings and bools."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn_name}(): argument '{name}' must be int, not {type(value).__name__}")
    return int(value)


def require_real(value: object, name: str, fn_name: str) -> float:
    """``value`` as a float; TypeError for anything that is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn_name}(): argument '{name}' must be float, not {type(value).__name__}")
    return float(value)


def wrap_dim(dim: object, ndim: int, fn_name: str) -> int:
    """``dim`` as a non-negative axis of an ``ndim``-dimensional array (a 0-d array has axes 0 and -1)."""
    dim = require_int(dim, "dim", fn_name)
    low, high = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not low <= dim <= high:
        raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
    return dim % max(ndim, 1)


def upstream_grad(grad_output: object, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``grad_output`` as an array of ``shape``: a scalar is spread over it, any other shape is a ValueError."""
    grad = np.asarray(grad_output, dtype=dtype)
    if grad.shape not in ((), shape):
        raise ValueError(f"grad_output must be a scalar or have shape {shape}, got shape {grad.shape}")
    return np.broadcast_to(grad, shape)


def require_broadcastable_to(array: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """RuntimeError unless ``array`` broadcasts to ``shape`` without enlarging it (torch's in-place rule)."""
    try:
        broadcast = np.broadcast_shapes(array.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != shape:
        raise RuntimeError(
            f"{name} of shape {shape_str(array.shape)} cannot be broadcast to the input shape {shape_str(shape)}"
        )
