"""Random cases (hypothesis) against torch, and invariances the formulas imply."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from np_oracle import check_against

import crossent.numpy as cnp

REDUCTIONS = st.sampled_from(["none", "mean", "sum"])


@st.composite
def _logits(draw: st.DrawFn) -> np.ndarray:
    classes = draw(st.integers(1, 5))
    rank = draw(st.integers(1, 4))
    if rank == 1:
        shape: tuple[int, ...] = (classes,)
    else:
        spatial = draw(st.lists(st.integers(1, 3), min_size=rank - 2, max_size=rank - 2))
        shape = (draw(st.integers(1, 3)), classes, *spatial)
    return draw(hnp.arrays(np.float64, shape, elements=st.floats(-30, 30)))


def _class_dim(logits: np.ndarray) -> int:
    return 0 if logits.ndim == 1 else 1


@settings(max_examples=120, deadline=None)
@given(_logits(), st.data(), REDUCTIONS, st.sampled_from([0.0, 0.0, 0.15, 1.0]), st.booleans())
def test_cross_entropy_random_cases_match_torch(
    logits: np.ndarray, data: st.DataObject, reduction: str, smoothing: float, weighted: bool
) -> None:
    cd = _class_dim(logits)
    classes = logits.shape[cd]
    target_shape = () if logits.ndim == 1 else (logits.shape[0], *logits.shape[2:])
    if data.draw(st.booleans(), label="probability targets"):
        target = data.draw(hnp.arrays(np.float64, logits.shape, elements=st.floats(0, 1)), label="target")
    else:
        labels = st.integers(0, classes - 1) | st.just(-100)
        target = data.draw(hnp.arrays(np.int64, target_shape, elements=labels), label="target")
    weight = data.draw(hnp.arrays(np.float64, classes, elements=st.floats(0.1, 3))) if weighted else None
    check_against(
        F,
        "cross_entropy",
        logits,
        target,
        rng=np.random.default_rng(0),
        tol={"rtol": 1e-11, "atol": 1e-11},
        weight=weight,
        reduction=reduction,
        label_smoothing=smoothing,
    )


@settings(max_examples=60, deadline=None)
@given(_logits(), st.floats(-50, 50))
def test_log_softmax_is_shift_invariant(logits: np.ndarray, shift: float) -> None:
    cd = _class_dim(logits)
    np.testing.assert_allclose(
        cnp.log_softmax(logits + shift, dim=cd), cnp.log_softmax(logits, dim=cd), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(np.exp(cnp.log_softmax(logits, dim=cd)), cnp.softmax(logits, dim=cd), rtol=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_ignoring_rows_equals_dropping_them(rows: int, classes: int, data: st.DataObject) -> None:
    """Masking with ignore_index is the same as slicing the rows away (loss and gradient)."""
    logits = data.draw(hnp.arrays(np.float64, (rows, classes), elements=st.floats(-10, 10)))
    labels = data.draw(hnp.arrays(np.int64, rows, elements=st.integers(0, classes - 1)))
    kept = data.draw(hnp.arrays(np.bool_, rows))
    masked = np.where(kept, labels, -100)
    for reduction in ("mean", "sum"):
        options = {"reduction": reduction, "label_smoothing": 0.1, "weight": np.linspace(0.5, 2.0, classes)}
        whole = cnp.cross_entropy(logits, masked, **options)
        sliced = cnp.cross_entropy(logits[kept], labels[kept], **options)
        np.testing.assert_allclose(whole, sliced, rtol=1e-13, equal_nan=True)
        grad = cnp.cross_entropy_grad(logits, masked, **options)
        np.testing.assert_allclose(
            grad[kept], cnp.cross_entropy_grad(logits[kept], labels[kept], **options), rtol=1e-13
        )
        assert not grad[~kept].any()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(-40, 40)), st.data())
def test_bce_with_logits_pos_weight_scales_the_positive_term(logits: np.ndarray, data: st.DataObject) -> None:
    """With hard labels, pos_weight multiplies exactly the positive examples' losses."""
    labels = data.draw(hnp.arrays(np.float64, logits.shape, elements=st.sampled_from([0.0, 1.0])))
    plain = cnp.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    weighted = cnp.binary_cross_entropy_with_logits(logits, labels, reduction="none", pos_weight=np.array(3.0))
    np.testing.assert_allclose(weighted, np.where(labels == 1, 3 * plain, plain), rtol=1e-13)
