"""crossent.numpy.log_softmax / softmax and their gradients against torch and crossent.functional."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from np_oracle import F32_TOL, REFERENCES, assert_same, to_torch

import crossent.numpy as cnp

CASES = {
    "vector": (np.array([0.3, -1.2, 2.0]), 0),
    "matrix_rows": (np.arange(12.0).reshape(3, 4) / 3, 1),
    "matrix_cols": (np.arange(12.0).reshape(3, 4) / 3, 0),
    "last_of_4d": (np.linspace(-3, 3, 48).reshape(2, 3, 2, 4), -1),
    "middle_of_4d": (np.linspace(-3, 3, 48).reshape(2, 3, 2, 4), 1),
    "scalar": (np.array(1.5), 0),
    "scalar_minus_one": (np.array(1.5), -1),
    "empty_slice": (np.zeros((3, 0)), 1),
    "empty_batch": (np.zeros((0, 3)), 1),
    "large": (np.array([1000.0, 0.0, -1000.0]), 0),
    "minus_inf": (np.array([[0.0, -np.inf, 1.0]]), 1),
    "all_minus_inf": (np.array([[-np.inf, -np.inf]]), 1),
    "plus_inf": (np.array([[np.inf, 0.0, 1.0]]), 1),
    "nan": (np.array([[np.nan, 0.0], [1.0, 2.0]]), 1),
}


def _torch_value_and_grad(fn, x: np.ndarray, dim: int, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xt = to_torch(x).requires_grad_(True)
    out = fn(xt, dim=dim)
    value = out.detach().clone().numpy()
    out.backward(torch.from_numpy(grad_output))
    assert xt.grad is not None
    return value, xt.grad.numpy()


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(reference: str, name: str, case: str) -> None:
    x, dim = CASES[case]
    grad_output = np.random.default_rng(0).uniform(0.5, 1.5, size=x.shape)
    value, grad = _torch_value_and_grad(getattr(REFERENCES[reference], name), x, dim, grad_output)
    assert_same(getattr(cnp, name)(x, dim=dim), value, f"{name} value")
    assert_same(getattr(cnp, f"{name}_grad")(x, grad_output, dim=dim), grad, f"{name} grad")


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_float32_and_dtype_argument(name: str) -> None:
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    np_fn, torch_fn = getattr(cnp, name), getattr(torch.nn.functional, name)
    assert_same(np_fn(x, dim=1), torch_fn(torch.from_numpy(x), dim=1).numpy(), name, F32_TOL)
    assert_same(
        np_fn(x, dim=1, dtype=np.float64),
        torch_fn(torch.from_numpy(x), dim=1, dtype=torch.float64).numpy(),
        f"{name} dtype=float64",
    )
    assert np_fn(np.arange(3), dim=0, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("ndim, implicit", [(0, 0), (1, 0), (2, 1), (3, 0), (4, 1)])
def test_implicit_dim_warns_and_matches_torch(name: str, ndim: int, implicit: int) -> None:
    x = np.random.default_rng(ndim).normal(size=(2,) * ndim)
    with pytest.warns(UserWarning, match=f"Implicit dimension choice for {name}") as record:
        value = getattr(cnp, name)(x)
    assert record[0].filename == __file__
    assert_same(value, getattr(cnp, name)(x, dim=implicit), f"{name} implicit dim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = getattr(torch.nn.functional, name)(torch.from_numpy(x)).numpy()
    assert_same(value, expected, f"{name} implicit dim vs torch")


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "log_softmax_grad", "softmax_grad"])
def test_errors(name: str) -> None:
    fn = getattr(cnp, name)
    grad = (np.ones((2, 3)),) if name.endswith("_grad") else ()
    with pytest.raises(IndexError, match=r"expected to be in range of \[-2, 1\], but got 2"):
        fn(np.zeros((2, 3)), *grad, dim=2)
    with pytest.raises(IndexError, match=r"expected to be in range of \[-1, 0\], but got 1"):
        fn(np.array(0.0), *(np.array(1.0),) * len(grad), dim=1)
    with pytest.raises(TypeError, match="'dim' must be int, not str"):
        fn(np.zeros((2, 3)), *grad, dim="1")
    with pytest.raises(NotImplementedError, match="int64"):
        fn(np.zeros((2, 3), np.int64), *grad, dim=1)
    with pytest.raises(TypeError, match="must be numpy.ndarray, not list"):
        fn([1.0, 2.0], *grad, dim=0)


def test_grad_output_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"grad_output must be a scalar or have shape \(2, 3\), got shape \(3,\)"):
        cnp.log_softmax_grad(np.zeros((2, 3)), np.ones(3), dim=1)
