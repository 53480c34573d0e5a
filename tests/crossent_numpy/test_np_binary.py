"""crossent.numpy.binary_cross_entropy(_with_logits) against torch and crossent.functional."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from np_oracle import F32_TOL, REFERENCES, check_against

import crossent.numpy as cnp

SHAPES = [(), (7,), (3, 4), (2, 3, 2), (0, 3)]
REDUCTIONS = ["none", "mean", "sum"]


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _weight_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...] | None]:
    """No weight, a full weight, a weight along the last axis, and a 0-d weight."""
    return [None, shape, shape[-1:], ()]


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_binary_cross_entropy_matches(reference: str, shape: tuple[int, ...]) -> None:
    for weight_shape, reduction in itertools.product(_weight_shapes(shape), REDUCTIONS):
        rng = _rng("bce", shape, weight_shape, reduction)
        probs = rng.uniform(0.02, 0.98, size=shape)
        target = rng.uniform(size=shape)
        weight = None if weight_shape is None else rng.uniform(0.5, 2.0, size=weight_shape)
        check_against(
            REFERENCES[reference],
            "binary_cross_entropy",
            probs,
            target,
            rng=rng,
            weight=weight,
            reduction=reduction,
        )


@pytest.mark.parametrize("reference", REFERENCES)
def test_binary_cross_entropy_clamps_and_saturates_like_torch(reference: str) -> None:
    """log clamped at -100 (x = 0 or 1, tiny x), log1p(-x) near 1, and the 1e-12 gradient floor."""
    probs = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1e-40, 1 - 1e-16, 0.5, 1.0])
    target = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.5, 0.5])
    for reduction in REDUCTIONS:
        check_against(
            REFERENCES[reference],
            "binary_cross_entropy",
            probs,
            target,
            rng=_rng("bce-edges", reduction),
            reduction=reduction,
        )
    assert cnp.binary_cross_entropy(np.array([0.0]), np.array([1.0])) == 100.0
    assert cnp.binary_cross_entropy_grad(np.array([0.0]), np.array([1.0]))[0] == pytest.approx(-1.0000000039958e12)


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_binary_cross_entropy_with_logits_matches(reference: str, shape: tuple[int, ...]) -> None:
    for weight_shape, pos_weight_shape, reduction in itertools.product(
        _weight_shapes(shape), [None, shape[-1:], shape], REDUCTIONS
    ):
        rng = _rng("bcewl", shape, weight_shape, pos_weight_shape, reduction)
        logits = rng.normal(scale=4.0, size=shape)
        target = rng.uniform(-0.5, 1.5, size=shape)  # soft and out-of-range targets are allowed
        check_against(
            REFERENCES[reference],
            "binary_cross_entropy_with_logits",
            logits,
            target,
            rng=rng,
            weight=None if weight_shape is None else rng.uniform(0.5, 2.0, size=weight_shape),
            pos_weight=None if pos_weight_shape is None else rng.uniform(0.0, 3.0, size=pos_weight_shape),
            reduction=reduction,
        )


@pytest.mark.parametrize("reference", REFERENCES)
def test_binary_cross_entropy_with_logits_extreme_logits(reference: str) -> None:
    logits = np.array([100.0, -100.0, 0.0, np.inf, -np.inf, np.inf, -np.inf, 800.0, -800.0, 1e-9])
    target = np.array([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    for reduction, pos_weight in itertools.product(REDUCTIONS, [None, np.array(2.5)]):
        check_against(
            REFERENCES[reference],
            "binary_cross_entropy_with_logits",
            logits,
            target,
            rng=_rng("bcewl-edges", reduction),
            reduction=reduction,
            pos_weight=pos_weight,
        )


@pytest.mark.parametrize("reference", REFERENCES)
def test_float32_and_result_dtypes(reference: str) -> None:
    """BCE keeps the input dtype (any weight dtype); BCE-with-logits returns the *target's* dtype."""
    rng = _rng("binary-f32")
    probs = rng.uniform(0.05, 0.95, size=(3, 4)).astype(np.float32)
    target32 = rng.uniform(size=(3, 4)).astype(np.float32)
    for reduction in REDUCTIONS:
        for logits, target, weight in [
            (probs, target32, None),
            (probs, target32, rng.uniform(size=4)),
        ]:
            check_against(
                REFERENCES[reference],
                "binary_cross_entropy",
                logits,
                target,
                rng=rng,
                tol=F32_TOL,
                weight=weight,
                reduction=reduction,
            )
        logits32 = rng.normal(size=(3, 4)).astype(np.float32)
        for logits, target in [
            (logits32, target32),
            (logits32, target32.astype(np.float64)),
            (logits32.astype(np.float64), target32),
        ]:
            check_against(
                REFERENCES[reference],
                "binary_cross_entropy_with_logits",
                logits,
                target,
                rng=rng,
                tol=F32_TOL,
                pos_weight=rng.uniform(size=4),
                reduction=reduction,
            )


def test_with_logits_equals_bce_of_sigmoid_for_moderate_logits() -> None:
    logits = np.linspace(-8, 8, 17)
    target = np.linspace(0, 1, 17)
    probs = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(
        cnp.binary_cross_entropy_with_logits(logits, target, reduction="none"),
        cnp.binary_cross_entropy(probs, target, reduction="none"),
        rtol=1e-12,
    )
