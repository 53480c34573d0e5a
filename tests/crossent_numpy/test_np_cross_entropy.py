"""crossent.numpy.cross_entropy / nll_loss against torch.nn.functional and crossent.functional (float64)."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from np_oracle import F32_TOL, REFERENCES, assert_same, check_against, to_torch

import crossent.numpy as cnp

SHAPES = [(5,), (3, 5), (2, 4, 3), (2, 3, 2, 2), (2, 3, 1, 2, 2), (0, 4), (2, 3, 0)]
IGNORE_PATTERNS = ["none", "some", "all", "in_range"]
REDUCTIONS = ["none", "mean", "sum"]


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _class_dim(shape: tuple[int, ...]) -> int:
    return 0 if len(shape) == 1 else 1


def _index_target(shape: tuple[int, ...], pattern: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Class indices for logits of ``shape`` and the ignore_index that goes with ``pattern``."""
    num_classes = shape[_class_dim(shape)]
    target_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    target = rng.integers(0, num_classes, size=target_shape).astype(np.int64)
    if pattern == "some":
        target = np.where(rng.random(target_shape) < 0.4, -100, target)
        target.flat[:1] = -100
    elif pattern == "all":
        target = np.full(target_shape, -100, np.int64)
    elif pattern == "in_range":
        target.flat[::2] = 1
        return target, 1
    return target, -100


def _weight(num_classes: int, weighted: bool, rng: np.random.Generator) -> np.ndarray | None:
    return rng.uniform(0.2, 2.0, size=num_classes) if weighted else None


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy_index_targets_match(reference: str, shape: tuple[int, ...]) -> None:
    for pattern, weighted, reduction, smoothing in itertools.product(
        IGNORE_PATTERNS, [False, True], REDUCTIONS, [0.0, 0.25, 1.0]
    ):
        rng = _rng(shape, pattern, weighted, reduction, smoothing)
        logits = rng.normal(scale=3.0, size=shape)
        target, ignore_index = _index_target(shape, pattern, rng)
        check_against(
            REFERENCES[reference],
            "cross_entropy",
            logits,
            target,
            rng=rng,
            weight=_weight(shape[_class_dim(shape)], weighted, rng),
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=smoothing,
        )


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cross_entropy_probability_targets_match(reference: str, shape: tuple[int, ...]) -> None:
    for normalised, weighted, reduction, smoothing in itertools.product(
        [True, False], [False, True], REDUCTIONS, [0.0, 0.3, 1.0]
    ):
        rng = _rng(shape, normalised, weighted, reduction, smoothing)
        logits = rng.normal(scale=3.0, size=shape)
        raw = rng.uniform(0.0, 2.0, size=shape)
        cd = _class_dim(shape)
        target = raw / raw.sum(axis=cd, keepdims=True) if normalised else raw
        check_against(
            REFERENCES[reference],
            "cross_entropy",
            logits,
            target,
            rng=rng,
            weight=_weight(shape[cd], weighted, rng),
            reduction=reduction,
            label_smoothing=smoothing,
        )


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nll_loss_matches(reference: str, shape: tuple[int, ...]) -> None:
    for pattern, weighted, reduction in itertools.product(IGNORE_PATTERNS, [False, True], REDUCTIONS):
        rng = _rng("nll", shape, pattern, weighted, reduction)
        target, ignore_index = _index_target(shape, pattern, rng)
        check_against(
            REFERENCES[reference],
            "nll_loss",
            rng.normal(size=shape),
            target,
            rng=rng,
            weight=_weight(shape[_class_dim(shape)], weighted, rng),
            ignore_index=ignore_index,
            reduction=reduction,
        )


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_one_element_target(reference: str, name: str, reduction: str) -> None:
    """An unbatched (C,) input takes a 0-d target or, without smoothing, a (1,) target; the loss is 0-d.

    torch's own backward fails for the (1,) target ("size mismatch"), so there only the value is
    compared, and the gradient must equal the 0-d target's.
    """
    rng = _rng(name, reduction)
    logits = rng.normal(size=4)
    loss, loss_grad = getattr(cnp, name), getattr(cnp, f"{name}_grad")
    for label in (2, -100):
        scalar_target, vector_target = np.array(label), np.array([label])
        check_against(REFERENCES[reference], name, logits, scalar_target, rng=rng, reduction=reduction)
        expected = getattr(REFERENCES[reference], name)(to_torch(logits), to_torch(vector_target), reduction=reduction)
        assert_same(loss(logits, vector_target, reduction=reduction), expected.numpy(), f"{name} (1,) target")
        assert_same(
            loss_grad(logits, vector_target, 0.75, reduction=reduction),
            loss_grad(logits, scalar_target, 0.75, reduction=reduction),
            f"{name} (1,) target grad",
        )


@pytest.mark.parametrize("reference", REFERENCES)
def test_uint8_targets_for_two_dimensional_input(reference: str) -> None:
    rng = _rng("uint8")
    logits = rng.normal(size=(4, 3))
    target = np.array([0, 2, 255, 1], np.uint8)
    for name in ("cross_entropy", "nll_loss"):
        check_against(
            REFERENCES[reference],
            name,
            logits,
            target,
            rng=rng,
            ignore_index=255,
            reduction="mean",
        )


NONFINITE_ROWS = {
    "minus_inf_logit": np.array([[0.0, -np.inf, 1.0], [0.5, 0.1, -0.2]]),
    "all_minus_inf": np.array([[-np.inf, -np.inf, -np.inf], [0.5, 0.1, -0.2]]),
    "plus_inf": np.array([[np.inf, 0.0, 1.0], [0.5, 0.1, -0.2]]),
    "nan": np.array([[0.0, np.nan, 1.0], [0.5, 0.1, -0.2]]),
    "huge": np.array([[1e9, -1e9, 0.0], [-1e9, 1e9, 1e9]]),
}


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("rows", NONFINITE_ROWS, ids=str)
@pytest.mark.parametrize("target", [[0, 1], [1, 0], [-100, 0], [2, -100]], ids=str)
def test_cross_entropy_non_finite_logits(reference: str, rows: str, target: list[int]) -> None:
    """inf/nan logits give torch's inf/nan pattern in the loss and gradient, ignored rows included."""
    for reduction, smoothing in itertools.product(REDUCTIONS, [0.0, 0.1, 1.0]):
        check_against(
            REFERENCES[reference],
            "cross_entropy",
            NONFINITE_ROWS[rows],
            np.array(target),
            rng=_rng(rows, target, reduction),
            reduction=reduction,
            label_smoothing=smoothing,
        )


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("rows", NONFINITE_ROWS, ids=str)
def test_cross_entropy_probability_targets_non_finite(reference: str, rows: str) -> None:
    target = np.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    for reduction in REDUCTIONS:
        check_against(
            REFERENCES[reference],
            "cross_entropy",
            NONFINITE_ROWS[rows],
            target,
            rng=_rng(rows, reduction),
            reduction=reduction,
        )


def test_cross_entropy_spec_values() -> None:
    """The verified values of the spec's edge-case table (torch-semantics.md §4.5)."""
    row = np.array([[0.0, -np.inf, 1.0]])
    assert float(cnp.cross_entropy(row, np.array([0]))) == pytest.approx(1.3132616875, abs=1e-10)
    assert float(cnp.cross_entropy(row, np.array([1]))) == np.inf
    assert float(cnp.cross_entropy(row, np.array([0]), label_smoothing=0.1)) == np.inf
    assert np.isnan(cnp.cross_entropy(row, np.array([[0.5, 0.0, 0.5]])))


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_zero_total_weight(reference: str, name: str) -> None:
    """Targets that only hit zero-weight classes: 'mean' is 0/0 = nan, and so is its gradient."""
    logits = np.array([[0.1, 0.2, 0.3], [0.3, -0.2, 0.0]])
    for reduction in REDUCTIONS:
        check_against(
            REFERENCES[reference],
            name,
            logits,
            np.array([1, 1]),
            rng=_rng(name, reduction),
            weight=np.array([1.0, 0.0, 2.0]),
            reduction=reduction,
        )


@pytest.mark.parametrize("reference", REFERENCES)
def test_no_classes(reference: str) -> None:
    """C = 0: every class-index target must be ignored; probability targets are empty rows."""
    logits = np.zeros((2, 0))
    for target, reduction, smoothing in itertools.product(
        [np.array([-100, -100]), np.zeros((2, 0))], REDUCTIONS, [0.0, 0.5]
    ):
        check_against(
            REFERENCES[reference],
            "cross_entropy",
            logits,
            target,
            rng=_rng("C=0", reduction),
            reduction=reduction,
            label_smoothing=smoothing,
        )


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("smoothing", [-0.5, float("nan")])
def test_negative_or_nan_smoothing_counts_as_zero(reference: str, smoothing: float) -> None:
    rng = _rng("smoothing", smoothing)
    logits = rng.normal(size=(3, 4))
    for target in (np.array([0, 3, 1]), rng.uniform(size=(3, 4))):
        check_against(
            REFERENCES[reference],
            "cross_entropy",
            logits,
            target,
            rng=rng,
            label_smoothing=smoothing,
        )
        assert cnp.cross_entropy(logits, target, label_smoothing=smoothing) == cnp.cross_entropy(logits, target)


@pytest.mark.parametrize("reference", REFERENCES)
def test_float32_dtypes_and_promotion(reference: str) -> None:
    """float32 stays float32; probability targets promote input, target and weight dtypes."""
    rng = _rng("f32")
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    index = np.array([0, 4, 2, -100])
    probs = rng.dirichlet(np.ones(5), size=4)
    cases = [
        (index, {"weight": rng.uniform(size=5).astype(np.float32), "label_smoothing": 0.1}),
        (probs.astype(np.float32), {}),
        (probs, {}),
        (probs.astype(np.float32), {"weight": rng.uniform(size=5)}),
    ]
    for target, options in cases:
        for reduction in REDUCTIONS:
            check_against(
                REFERENCES[reference],
                "cross_entropy",
                logits,
                target,
                rng=rng,
                tol=F32_TOL,
                reduction=reduction,
                **options,
            )


def test_cross_entropy_is_nll_of_log_softmax() -> None:
    rng = _rng("composition")
    logits = rng.normal(size=(3, 4, 2))
    target = np.array([[0, 3], [-100, 2], [1, 1]])
    weight = rng.uniform(size=4)
    composed = cnp.nll_loss(cnp.log_softmax(logits, dim=1), target, weight=weight)
    assert_same(cnp.cross_entropy(logits, target, weight=weight), composed, "cross_entropy == nll(log_softmax)")


def test_index_targets_equal_one_hot_targets_without_weights() -> None:
    """Without weights or ignored targets, class indices and their one-hot rows give the same loss."""
    rng = _rng("one-hot")
    logits = rng.normal(size=(6, 4))
    target = rng.integers(0, 4, size=6)
    one_hot = np.eye(4)[target]
    for reduction, smoothing in itertools.product(REDUCTIONS, [0.0, 0.2]):
        options = {"reduction": reduction, "label_smoothing": smoothing}
        np.testing.assert_allclose(
            cnp.cross_entropy(logits, target, **options), cnp.cross_entropy(logits, one_hot, **options), rtol=1e-13
        )
        np.testing.assert_allclose(
            cnp.cross_entropy_grad(logits, target, **options),
            cnp.cross_entropy_grad(logits, one_hot, **options),
            rtol=1e-13,
            atol=1e-15,
        )
