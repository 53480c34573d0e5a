"""Bad input raises the exception class torch raises, with a message naming the offending value."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from np_oracle import to_torch

import crossent.numpy as cnp

f64 = np.zeros((3, 5))
f32 = np.zeros((3, 5), np.float32)
probs = np.full((3, 5), 0.2)
labels = np.array([1, 0, 4])

# (function, args, kwargs, message pattern)
CASES: dict[str, tuple[str, tuple[Any, ...], dict[str, Any], str]] = {
    "target_too_large": ("cross_entropy", (f64, np.array([1, 0, 5])), {}, "Target 5 is out of bounds"),
    "target_negative": ("cross_entropy", (f64, np.array([1, 0, -1])), {}, "Target -1 is out of bounds"),
    "nll_target_too_large_none": ("nll_loss", (f64, np.array([1, 7, 0])), {"reduction": "none"}, "Target 7"),
    "batch_mismatch": (
        "cross_entropy",
        (f64, np.array([1, 0])),
        {},
        r"input batch_size \(3\).*target batch_size \(2\)",
    ),
    "scalar_target_for_matrix": ("cross_entropy", (np.zeros((2, 3)), np.array(0)), {}, "batch_size"),
    "float_index_target": ("cross_entropy", (f64, np.array([1.0, 0.0, 2.0])), {}, "float64"),
    "int32_target": ("cross_entropy", (f64, labels.astype(np.int32)), {}, "int32"),
    "uint8_target_3d": ("cross_entropy", (np.zeros((2, 3, 4)), np.zeros((2, 4), np.uint8)), {}, "uint8"),
    "long_prob_target": ("cross_entropy", (f64, np.zeros((3, 5), np.int64)), {}, "floating point"),
    "prob_target_ignore_index": ("cross_entropy", (f64, probs), {"ignore_index": 0}, "ignore_index"),
    "prob_target_wrong_classes": ("cross_entropy", (f64, np.zeros((3, 4))), {}, r"multi-target"),
    "weight_wrong_length": ("cross_entropy", (f64, labels), {"weight": np.ones(4)}, r"5 classes.*\[4\]"),
    "weight_2d": ("nll_loss", (f64, labels), {"weight": np.ones((1, 5))}, r"\[1, 5\]"),
    "prob_weight_wrong_length": ("cross_entropy", (f64, probs), {"weight": np.ones(4)}, r"cross_entropy: .*\[4\]"),
    "weight_kdim_wrong_length": (
        "cross_entropy",
        (np.zeros((2, 3, 4)), np.zeros((2, 4), np.int64)),
        {"weight": np.ones(4)},
        r"3 classes",
    ),
    "weight_dtype": ("cross_entropy", (f32, labels), {"weight": np.ones(5)}, "float64"),
    "smoothing_above_one": ("cross_entropy", (f64, labels), {"label_smoothing": 1.5}, "Got: 1.5"),
    "smoothing_above_one_probs": ("cross_entropy", (f64, probs), {"label_smoothing": 1.5}, "Got: 1.5"),
    "bad_reduction": ("cross_entropy", (f64, labels), {"reduction": "avg"}, "avg is not a valid value for reduction"),
    "batchmean_outside_kl": ("binary_cross_entropy", (probs, probs), {"reduction": "batchmean"}, "batchmean"),
    "kdim_target_size": (
        "cross_entropy",
        (np.zeros((2, 3, 5)), np.zeros((2, 4), np.int64)),
        {},
        r"\[2, 5\], got \[2, 4\]",
    ),
    "4d_target_size": ("cross_entropy", (np.zeros((2, 3, 5, 5)), np.zeros((2, 4, 5), np.int64)), {}, r"\[2, 4, 5\]"),
    "4d_target_rank": ("cross_entropy", (np.zeros((2, 3, 5, 5)), np.zeros((2, 5), np.int64)), {}, r"\[2, 5\]"),
    "multi_target": ("cross_entropy", (np.zeros((2, 3)), np.zeros((2, 1), np.int64)), {}, "multi-target"),
    "unbatched_long_target": ("cross_entropy", (np.zeros(3), np.array([0, 1])), {}, "target size: 2"),
    "scalar_input_prob": ("cross_entropy", (np.array(0.0), np.array(0.5)), {}, "no dimensions"),
    "scalar_input_index": ("cross_entropy", (np.array(0.0), np.array([0, 1])), {}, r"\[-1, 0\]"),
    "nll_scalar_input": ("nll_loss", (np.array(0.0), np.array(0)), {}, r"Expected 1 or more dimensions \(got 0\)"),
    "integer_logits": ("cross_entropy", (np.zeros((3, 5), np.int64), labels), {}, "int64"),
    "integer_nll_input": ("nll_loss", (np.zeros((3, 5), np.int64), labels), {}, "int64"),
    "bce_input_range": (
        "binary_cross_entropy",
        (np.array([1.5]), np.array([0.0])),
        {},
        r"input should be between 0 and 1 \(found 1.5\)",
    ),
    "bce_input_nan": (
        "binary_cross_entropy",
        (np.array([np.nan]), np.array([0.0])),
        {},
        "input should be between 0 and 1",
    ),
    "bce_target_range": (
        "binary_cross_entropy",
        (np.array([0.5]), np.array([-0.5])),
        {},
        r"target should be between 0 and 1 \(found -0.5\)",
    ),
    "bce_shape": ("binary_cross_entropy", (np.zeros((3, 1)), np.zeros(3)), {}, r"\(3,\).*\(3, 1\)"),
    "bce_weight_broadcast": (
        "binary_cross_entropy",
        (np.zeros((3, 2)), np.zeros((3, 2))),
        {"weight": np.ones(3)},
        r"\[3\].*\[3, 2\]",
    ),
    "bce_weight_enlarges": (
        "binary_cross_entropy",
        (np.zeros((3, 2)), np.zeros((3, 2))),
        {"weight": np.ones((4, 3, 2))},
        r"\[4, 3, 2\]",
    ),
    "bce_target_dtype": ("binary_cross_entropy", (f32, probs), {}, "float64 but expected float32"),
    "bce_integer": ("binary_cross_entropy", (np.zeros(3, np.int64), np.zeros(3, np.int64)), {}, "int64"),
    "bcewl_shape": ("binary_cross_entropy_with_logits", (np.zeros((3, 1)), np.zeros(3)), {}, r"\(3,\).*\(3, 1\)"),
    "bcewl_pos_weight_broadcast": (
        "binary_cross_entropy_with_logits",
        (np.zeros((3, 2)), np.zeros((3, 2))),
        {"pos_weight": np.ones(3)},
        r"pos_weight .*\[3\]",
    ),
    "bcewl_pos_weight_enlarges": (
        "binary_cross_entropy_with_logits",
        (np.zeros((3, 2)), np.zeros((3, 2))),
        {"pos_weight": np.ones((4, 3, 2))},
        r"\[4, 3, 2\]",
    ),
    "bcewl_weight_broadcast": (
        "binary_cross_entropy_with_logits",
        (np.zeros((3, 2)), np.zeros((3, 2))),
        {"weight": np.ones(3)},
        r"weight .*\[3\]",
    ),
    "bcewl_pos_weight_float": (
        "binary_cross_entropy_with_logits",
        (np.zeros(2), np.zeros(2)),
        {"pos_weight": 2.0},
        "'pos_weight' must be numpy.ndarray, not float",
    ),
    "bcewl_integer_target": ("binary_cross_entropy_with_logits", (f32, np.zeros((3, 5), np.int64)), {}, "int64"),
    "bcewl_integer_input": ("binary_cross_entropy_with_logits", (np.zeros(3, np.int64), np.zeros(3)), {}, "int64"),
    "kl_shapes": ("kl_div", (np.zeros((3, 4)), np.zeros((3, 5))), {"reduction": "sum"}, r"\[3, 4\].*\[3, 5\]"),
    "kl_integer": ("kl_div", (f64, np.zeros((3, 5), np.int64)), {"reduction": "sum"}, "Integral inputs not supported"),
    "kl_complex": ("kl_div", (f64.astype(np.complex128), probs), {"reduction": "sum"}, "Complex inputs not supported"),
    "kl_log_target_none": (
        "kl_div",
        (f64, probs),
        {"log_target": None, "reduction": "sum"},
        "'log_target' must be bool, not NoneType",
    ),
    "ignore_index_float": (
        "cross_entropy",
        (f64, labels),
        {"ignore_index": 1.0},
        "'ignore_index' must be int, not float",
    ),
    "smoothing_string": ("cross_entropy", (f64, labels), {"label_smoothing": "0.1"}, "'label_smoothing' must be float"),
    "list_input": ("cross_entropy", ([[0.0, 1.0]], np.array([0])), {}, "'input' must be numpy.ndarray, not list"),
}


def _torch_error(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> type[BaseException]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            getattr(F, name)(*map(to_torch, args), **{key: to_torch(value) for key, value in kwargs.items()})
        except Exception as exc:
            return type(exc)
    raise AssertionError(f"torch accepted {name}{args}")


@pytest.mark.parametrize("case", CASES)
def test_error_class_matches_torch_and_message_names_the_value(case: str) -> None:
    name, args, kwargs, message = CASES[case]
    expected = _torch_error(name, args, kwargs)
    for fn in (getattr(cnp, name), lambda *a, **k: getattr(cnp, f"{name}_grad")(a[0], a[1], 1.0, **k)):
        with pytest.raises(expected, match=message):
            fn(*args, **kwargs)


def test_error_class_matches_torch_for_bad_grad_output() -> None:
    with pytest.raises(ValueError, match=r"grad_output must be a scalar or have shape \(\), got shape \(3,\)"):
        cnp.cross_entropy_grad(f64, labels, np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(3,\), got shape \(2,\)"):
        cnp.cross_entropy_grad(f64, labels, np.ones(2), reduction="none")


def test_torch_accepts_what_we_accept() -> None:
    """Negative weights, out-of-range probability targets and in-range ignore_index are not errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnp.cross_entropy(f64, labels, weight=-np.ones(5))
        cnp.cross_entropy(f64, -probs)
        cnp.cross_entropy(f64, labels, ignore_index=4)
        cnp.nll_loss(f64, np.array([255, 0, 255], np.uint8), ignore_index=255)
    assert torch.is_tensor(F.cross_entropy(torch.zeros(3, 5), torch.tensor([1, 0, 4]), ignore_index=4))


def test_smoothing_with_an_unbatched_one_element_target_is_a_value_not_torchs_error() -> None:
    """torch fails here (it adds a ()-shaped smoothing term to a (1,)-shaped loss in place); the
    reference computes the formula, the same as for the 0-d target."""
    logits = np.array([0.5, -1.0, 2.0, 0.0])
    for fn in (cnp.cross_entropy, lambda *a, **k: cnp.cross_entropy_grad(a[0], a[1], 1.0, **k)):
        np.testing.assert_allclose(
            fn(logits, np.array([1]), label_smoothing=0.1), fn(logits, np.array(1), label_smoothing=0.1)
        )
