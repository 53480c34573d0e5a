"""Run a torch loss (torch.nn.functional or crossent.functional) on NumPy arguments, and compare results.

A helper module for tests/crossent_numpy (not collected by pytest: its name does not start with ``test_``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import crossent.functional as crossent_functional
import crossent.numpy as cnp

# The two torch-side implementations the NumPy reference must agree with.
REFERENCES: dict[str, Any] = {"torch": F, "crossent": crossent_functional}

# float64 results may differ from torch's only by summation order.
F64_TOL = {"rtol": 1e-12, "atol": 1e-12}
F32_TOL = {"rtol": 2e-6, "atol": 1e-6}


def to_torch(value: Any) -> Any:
    return torch.from_numpy(np.array(value)) if isinstance(value, (np.ndarray, np.generic)) else value


def torch_value_and_grad(
    fn: Callable[..., torch.Tensor], input: np.ndarray, target: np.ndarray, grad_output: Any, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``fn(input, target, **kwargs)`` and, by autograd, its gradient w.r.t. ``input`` for ``grad_output``."""
    x = to_torch(input).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-argument and 'mean' deprecations, checked elsewhere
        out = fn(x, to_torch(target), **{key: to_torch(value) for key, value in kwargs.items()})
    value = out.detach().clone().numpy()
    out.backward(torch.as_tensor(np.asarray(grad_output), dtype=out.dtype).expand(out.shape))
    assert x.grad is not None
    return value, x.grad.numpy()


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str, tol: dict[str, float] = F64_TOL) -> None:
    """Same shape, dtype, NaN/inf pattern and (within ``tol``) values."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, equal_nan=True, err_msg=what, **tol)


def grad_output_for(shape: tuple[int, ...], rng: np.random.Generator) -> Any:
    """A non-trivial upstream gradient: an array for an unreduced loss, a scalar for a reduced one."""
    return rng.uniform(0.5, 1.5, size=shape) if shape else 0.75


def check_against(
    reference: Any,
    name: str,
    input: np.ndarray,
    target: np.ndarray,
    *,
    rng: np.random.Generator,
    tol: dict[str, float] = F64_TOL,
    **kwargs: Any,
) -> None:
    """``crossent.numpy.<name>`` and ``<name>_grad`` equal ``reference.<name>``'s value and autograd gradient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-argument and 'mean' deprecations, checked elsewhere
        value = getattr(cnp, name)(input, target, **kwargs)
        grad_output = grad_output_for(np.shape(value), rng)
        grad = getattr(cnp, f"{name}_grad")(input, target, grad_output, **kwargs)
    expected_value, expected_grad = torch_value_and_grad(getattr(reference, name), input, target, grad_output, **kwargs)
    assert_same(value, expected_value, f"{name} value {kwargs}", tol)
    assert_same(grad, expected_grad, f"{name} grad {kwargs}", tol)
