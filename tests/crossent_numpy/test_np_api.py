"""crossent.numpy as a package: no torch, runnable docstrings, torch's reduction arguments and warnings."""

from __future__ import annotations

import ast
import doctest
import importlib
import pathlib
import pkgutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from np_oracle import assert_same, to_torch

import crossent.numpy as cnp

PACKAGE_DIR = pathlib.Path(cnp.__file__).parent
MODULES = ["crossent.numpy"] + [f"crossent.numpy.{info.name}" for info in pkgutil.iter_modules([str(PACKAGE_DIR)])]

LOSSES = {
    "cross_entropy": (np.random.default_rng(0).normal(size=(4, 3)), np.array([0, 2, 1, -100])),
    "nll_loss": (np.random.default_rng(1).normal(size=(4, 3)), np.array([0, 2, 1, -100])),
    "binary_cross_entropy": (np.full((2, 3), 0.3), np.full((2, 3), 0.6)),
    "binary_cross_entropy_with_logits": (np.linspace(-2, 2, 6).reshape(2, 3), np.full((2, 3), 0.6)),
    "kl_div": (np.log(np.full((2, 3), 0.2)), np.full((2, 3), 0.5)),
}


def test_no_module_imports_torch() -> None:
    """The reference backend is NumPy only: no module of the package imports torch."""
    for path in PACKAGE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "torch" for name in names), f"{path.name} imports torch"


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_function_has_a_gradient_partner_and_a_full_docstring() -> None:
    for name in cnp.__all__:
        doc = getattr(cnp, name).__doc__
        assert doc and "Shape:" in doc and "Example:" in doc and ".. math::" in doc, name
        assert name.endswith("_grad") or f"{name}_grad" in cnp.__all__, name


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize(
    "size_average, reduce", [(None, False), (True, None), (False, None), (False, True), (True, False), (0, 1)]
)
def test_legacy_size_average_and_reduce_override_reduction(name: str, size_average, reduce) -> None:
    input, target = LOSSES[name]
    legacy = {"size_average": size_average, "reduce": reduce, "reduction": "sum"}
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated") as record:
        value = getattr(cnp, name)(input, target, **legacy)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = getattr(F, name)(to_torch(input), to_torch(target), **legacy)
    assert_same(value, expected.numpy(), f"{name} {legacy}")


@pytest.mark.parametrize("name", LOSSES)
def test_elementwise_mean_is_a_deprecated_alias(name: str) -> None:
    input, target = LOSSES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = getattr(cnp, name)(input, target, reduction="mean")
    with pytest.warns(UserWarning, match="elementwise_mean' is deprecated") as record:
        alias = getattr(cnp, name)(input, target, reduction="elementwise_mean")
    assert record[0].filename == __file__
    assert_same(alias, mean, name)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", [None, "Mean", "", "batchmean"])
def test_bad_reduction_wins_over_every_other_error(name: str, reduction: object) -> None:
    if name == "kl_div" and reduction == "batchmean":
        return
    with pytest.raises(ValueError, match=f"^{reduction} is not a valid value for reduction$"):
        getattr(cnp, name)(np.zeros(2, np.int64), np.zeros(5), reduction=reduction)
    with pytest.raises(ValueError, match=f"^{reduction} is not a valid value for reduction$"):
        getattr(F, name)(torch.zeros(2, dtype=torch.long), torch.zeros(5), reduction=reduction)


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_is_linear_in_grad_output(name: str) -> None:
    """Scaling the upstream gradient scales the result; 'none' with all-ones upstream equals 'sum'."""
    input, target = LOSSES[name]
    grad = getattr(cnp, f"{name}_grad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(grad(input, target, 2.5), 2.5 * grad(input, target), rtol=1e-15)
        loss_shape = getattr(cnp, name)(input, target, reduction="none").shape
        np.testing.assert_allclose(
            grad(input, target, np.ones(loss_shape), reduction="none"),
            grad(input, target, 1.0, reduction="sum"),
            rtol=1e-15,
        )
