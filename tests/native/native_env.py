"""Shared by the native-kernel tests: which levels run here, float64 oracles, and error measures."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from crossent.native import _library

LEVELS = ("avx512", "avx2", "scalar")
LOW = (torch.bfloat16, torch.float16)
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23}

LOADED = _library.load()
needs_native = pytest.mark.skipif(
    not isinstance(LOADED, _library.Library), reason=f"the native kernels do not load here: {LOADED}"
)


def level_library(level: str) -> _library.Library:
    """The kernels of ``level``, or a skip when this CPU (or this machine) cannot run them."""
    if not isinstance(LOADED, _library.Library):
        pytest.skip(f"the native kernels do not load here: {LOADED}")
    try:
        return _library.load_level(level)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def supported_levels() -> list[str]:
    found = []
    for level in LEVELS:
        try:
            _library.load_level(level)
        except (RuntimeError, OSError):
            continue
        found.append(level)
    return found


def _to64(a: Any) -> Any:
    if isinstance(a, torch.Tensor) and a.is_floating_point():
        return a.to(torch.float64)
    return a


def in_float64(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` computed in float64 on the same inputs (floating tensors, also in kwargs, are cast up) and
    rounded back to the first input's dtype; autograd casts the gradients back to each input's dtype."""

    def wrapped(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = fn(*(_to64(a) for a in args), **{k: _to64(v) for k, v in kwargs.items()})
        return out.to(args[0].dtype)

    return wrapped


def max_error(actual: torch.Tensor, truth: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """The largest absolute difference from ``truth``; infinite where ``actual`` is NaN or infinite but
    the truth rounded to ``dtype`` (by default actual's) is not, or differs from it there."""
    actual, rounded, truth = actual.double(), truth.to(dtype or actual.dtype).double(), truth.double()
    finite = torch.isfinite(rounded)
    special_ok = torch.equal(torch.isnan(actual[~finite]), torch.isnan(rounded[~finite])) and torch.equal(
        actual[~finite].nan_to_num(0.0), rounded[~finite].nan_to_num(0.0)
    )
    if not special_ok:
        return math.inf
    if not finite.any():
        return 0.0
    return (actual[finite] - truth[finite]).abs().max().item()


def ulp_at(magnitude: float, dtype: torch.dtype) -> float:
    """One unit in the last place of ``dtype`` at ``magnitude`` (normal numbers)."""
    info = torch.finfo(dtype)
    magnitude = max(abs(magnitude), info.tiny)
    return 2.0 ** (math.floor(math.log2(magnitude)) - MANTISSA_BITS[dtype])
