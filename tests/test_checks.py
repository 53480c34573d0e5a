"""Arguments are accepted and refused exactly as torch accepts and refuses them.

Each case runs under both torch.nn.functional and crossent: either both return the same value
(float64 logits, so the comparison is exact) or both raise the same exception class with the same
message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import crossent

F64 = torch.float64


class _Index:
    def __index__(self) -> int:
        return -100


def _same_outcome(case: Callable[[Any], torch.Tensor]) -> None:
    outcomes = []
    for module in (TF, crossent):
        try:
            outcomes.append(("value", case(module)))
        except Exception as exc:  # the class and message are what is compared
            outcomes.append((type(exc), str(exc)))
    (kind_torch, torch_result), (kind_ours, our_result) = outcomes
    assert kind_ours == kind_torch, f"torch: {kind_torch} {torch_result!s:.200}; ours: {kind_ours} {our_result!s:.200}"
    if kind_torch == "value":
        assert our_result.shape == torch_result.shape and our_result.dtype == torch_result.dtype
        torch.testing.assert_close(our_result, torch_result, equal_nan=True)
    else:
        assert our_result == torch_result


x43 = torch.randn(4, 3, dtype=F64)
t4 = torch.tensor([0, 1, 2, 1])
INTEGERS = {
    "int": -100,
    "bool": True,
    "np.int64": np.int64(-100),
    "np.int8": np.int8(-100),
    "np.uint8": np.uint8(1),
    "0-d int64 tensor": torch.tensor(-100),
    "0-d int32 tensor": torch.tensor(-100, dtype=torch.int32),
    "1-element tensor": torch.tensor([-100]),
    "0-d float tensor": torch.tensor(-100.0),
    "float": -100.0,
    "np.float64": np.float64(-100),
    "__index__ object": _Index(),
    "str": "a",
}
FLOATS = {
    "float": 0.1,
    "int": 0,
    "bool": True,
    "np.float32": np.float32(0.1),
    "np.int64": np.int64(0),
    "np.bool_": np.bool_(True),
    "0-d tensor": torch.tensor(0.1),
    "0-d float64 tensor": torch.tensor(0.1, dtype=F64),
    "0-d int tensor": torch.tensor(0),
    "1-element tensor": torch.tensor([0.1]),
    "0-d tensor requiring grad": torch.tensor(0.1, requires_grad=True),
    "str": "a",
    "complex": 1j,
}
DIMS = {
    "int": 1,
    "np.int64": np.int64(1),
    "np.int32": np.int32(-1),
    "0-d tensor": torch.tensor(1),
    "bool": True,
    "float": 1.0,
    "__index__ object": _Index(),
}
DTYPES = {
    "torch.float64": torch.float64,
    "float": float,
    "int": int,
    "bool": bool,
    "complex": complex,
    "1": 1,
    "str": "float32",
    "np.float32": np.float32,
}


@pytest.mark.parametrize("value", INTEGERS.values(), ids=INTEGERS.keys())
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_ignore_index_takes_what_torch_takes(loss, value):
    _same_outcome(lambda F: getattr(F, loss)(x43, t4, ignore_index=value))


@pytest.mark.parametrize("value", FLOATS.values(), ids=FLOATS.keys())
@pytest.mark.parametrize("target", ["indices", "probabilities"])
def test_label_smoothing_takes_what_torch_takes(target, value):
    y = t4 if target == "indices" else x43.softmax(1)
    _same_outcome(lambda F: F.cross_entropy(x43, y, label_smoothing=value))


@pytest.mark.parametrize("value", DIMS.values(), ids=DIMS.keys())
@pytest.mark.parametrize("fn", ["log_softmax", "softmax"])
def test_dim_takes_what_torch_takes(fn, value):
    _same_outcome(lambda F: getattr(F, fn)(x43, dim=value))


@pytest.mark.parametrize("value", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("fn", ["log_softmax", "softmax"])
def test_dtype_takes_what_torch_takes(fn, value):
    _same_outcome(lambda F: getattr(F, fn)(x43, 1, dtype=value))


NOT_TENSORS = {"list": [1.0, 1.0, 1.0], "ndarray": np.ones(3), "float": 1.0}
WEIGHTED = {
    "cross_entropy weight": lambda F, w: F.cross_entropy(x43, t4, w),
    "cross_entropy probabilities weight": lambda F, w: F.cross_entropy(x43, x43.softmax(1), w),
    "nll_loss weight": lambda F, w: F.nll_loss(x43, t4, w),
    "binary_cross_entropy weight": lambda F, w: F.binary_cross_entropy(x43.sigmoid(), x43.sigmoid(), w),
    "binary_cross_entropy_with_logits weight": lambda F, w: F.binary_cross_entropy_with_logits(x43, x43.sigmoid(), w),
    "binary_cross_entropy_with_logits pos_weight": lambda F, w: F.binary_cross_entropy_with_logits(
        x43, x43.sigmoid(), pos_weight=w
    ),
}


@pytest.mark.parametrize("value", NOT_TENSORS.values(), ids=NOT_TENSORS.keys())
@pytest.mark.parametrize("case", WEIGHTED.values(), ids=WEIGHTED.keys())
def test_a_weight_that_is_not_a_tensor_fails_as_in_torch(case, value):
    _same_outcome(lambda F: case(F, value))


KDIM_INPUTS = [(2, 3, 4), (2, 3, 1), (2, 3, 4, 2), (2, 3, 1, 1, 2)]
WEIGHT_SHAPES = [(3,), (3, 1), (1, 3), (3, 1, 1), (1, 1, 3), (), (1,), (4,), (2, 2)]
WEIGHTED_KDIM = {
    "cross_entropy": lambda F, x, y, w, r: F.cross_entropy(x, y, w, reduction=r),
    "smoothed": lambda F, x, y, w, r: F.cross_entropy(x, y, w, reduction=r, label_smoothing=0.2),
    "ignored": lambda F, x, y, w, r: F.cross_entropy(x, torch.where(y == 0, -100, y), w, reduction=r),
    "probabilities": lambda F, x, y, w, r: F.cross_entropy(x, x.softmax(1), w, reduction=r),
    "nll_loss": lambda F, x, y, w, r: F.nll_loss(x.log_softmax(1), y, w, reduction=r),
}


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weight_shape", WEIGHT_SHAPES, ids=str)
@pytest.mark.parametrize("input_shape", KDIM_INPUTS, ids=str)
@pytest.mark.parametrize("case", WEIGHTED_KDIM.values(), ids=WEIGHTED_KDIM.keys())
def test_class_weight_of_any_shape_torch_accepts(case, input_shape, weight_shape, reduction):
    x = torch.randn(input_shape, dtype=F64)
    y = torch.randint(0, 3, (input_shape[0], *input_shape[2:]))
    w = torch.rand(weight_shape, dtype=F64) + 0.1
    _same_outcome(lambda F: case(F, x, y, w, reduction))


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("weight_shape", [(3, 1), (1, 3), (3, 1, 1)], ids=str)
def test_class_weight_of_any_shape_gives_torchs_gradient(weight_shape, reduction, impl):
    from crossent import _dispatch
    from tests.helpers import check_against

    try:
        _dispatch.resolve("cross_entropy", impl, torch.device("cpu"))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    x = torch.randn(2, 3, 5, dtype=F64)
    y = torch.randint(0, 3, (2, 5))
    w = torch.rand(weight_shape, dtype=F64)
    for fn, oracle in ((crossent.cross_entropy, TF.cross_entropy), (crossent.nll_loss, TF.nll_loss)):
        check_against(functools.partial(fn, impl=impl), oracle, (x, y, w), {"reduction": reduction})


def test_issue_example_weight_3_1_on_a_2_3_1_input():
    x = torch.tensor([[[0.5], [1.0], [-1.0]], [[2.0], [0.0], [0.3]]])
    y = torch.tensor([[2], [1]])
    w = torch.tensor([[0.2], [1.0], [3.0]])
    torch.testing.assert_close(crossent.cross_entropy(x, y, w), TF.cross_entropy(x, y, w))
    assert crossent.cross_entropy(x, y, w, reduction="none").shape == (2, 1)


CLASSLESS = [(2, 0, 3), (2, 0, 1), (2, 0, 3, 2), (2, 0, 3, 1, 2), (2, 0, 0), (0, 0, 3)]


@pytest.mark.parametrize("shape", CLASSLESS, ids=str)
@pytest.mark.parametrize("case", WEIGHTED_KDIM.values(), ids=WEIGHTED_KDIM.keys())
def test_kdim_input_without_classes_fails_or_works_as_in_torch(case, shape):
    x = torch.randn(shape, dtype=F64)
    y = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    _same_outcome(lambda F: case(F, x, y, None, "mean"))


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_implicit_dim_warning_points_at_the_caller(name):
    with pytest.warns(UserWarning, match="Implicit dimension choice") as record:
        getattr(crossent, name)(torch.randn(2, 3))
    assert record[0].filename == __file__
