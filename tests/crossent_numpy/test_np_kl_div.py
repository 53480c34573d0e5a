"""crossent.numpy.kl_div against torch and crossent.functional."""

from __future__ import annotations

import itertools
import warnings
import zlib

import numpy as np
import pytest
import torch
from np_oracle import F32_TOL, REFERENCES, assert_same, check_against

import crossent.numpy as cnp

REDUCTIONS = ["none", "mean", "sum", "batchmean"]
SHAPE_PAIRS = [
    ((), ()),
    ((5,), (5,)),
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((2, 1, 3), (2, 4, 3)),
    ((0, 3), (0, 3)),
]


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_kl_div_matches(reference: str, shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    input_shape, target_shape = shapes
    for reduction, log_target in itertools.product(REDUCTIONS, [False, True]):
        rng = _rng(shapes, reduction, log_target)
        log_q = np.log(rng.uniform(0.05, 1.0, size=input_shape))
        p = np.array(rng.uniform(0.0, 1.0, size=target_shape))
        p.flat[::3] = 0.0  # 0 log 0 = 0
        with np.errstate(divide="ignore"):
            target = np.log(p) if log_target else p
        check_against(
            REFERENCES[reference],
            "kl_div",
            log_q,
            target,
            rng=rng,
            reduction=reduction,
            log_target=log_target,
        )


@pytest.mark.parametrize("reference", REFERENCES)
def test_kl_div_non_finite_and_negative_targets(reference: str) -> None:
    """t = 0 with x = -inf and t < 0 give nan; log-target -inf gives nan (0·inf)."""
    log_q = np.array([-np.inf, -1.0, -2.0, 0.0, -np.inf])
    for log_target, target in [
        (False, np.array([0.0, -0.5, 0.3, np.nan, 0.2])),
        (True, np.array([-np.inf, -1.0, np.inf, 0.0, -0.5])),
    ]:
        for reduction in REDUCTIONS:
            check_against(
                REFERENCES[reference],
                "kl_div",
                log_q,
                target,
                rng=_rng("kl-edges", log_target, reduction),
                reduction=reduction,
                log_target=log_target,
            )


@pytest.mark.parametrize("reference", REFERENCES)
def test_kl_div_promotes_dtypes(reference: str) -> None:
    rng = _rng("kl-f32")
    log_q = np.log(rng.dirichlet(np.ones(4), size=3)).astype(np.float32)
    p = rng.dirichlet(np.ones(4), size=3)
    for target, reduction in itertools.product([p.astype(np.float32), p], REDUCTIONS):
        check_against(
            REFERENCES[reference],
            "kl_div",
            log_q,
            target,
            rng=rng,
            tol=F32_TOL,
            reduction=reduction,
        )


def test_mean_warns_like_torch_and_batchmean_is_the_kl_divergence() -> None:
    p = np.array([[0.25, 0.75], [0.5, 0.5]])
    log_q = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size") as record:
        mean = cnp.kl_div(log_q, p)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_mean = torch.nn.functional.kl_div(torch.from_numpy(log_q), torch.from_numpy(p))
    assert_same(mean, torch_mean.numpy(), "kl_div 'mean'")
    per_row = np.sum(p * np.log(p / np.exp(log_q)), axis=1)
    np.testing.assert_allclose(cnp.kl_div(log_q, p, reduction="batchmean"), per_row.mean(), rtol=1e-14)


@pytest.mark.parametrize("reference", REFERENCES)
def test_legacy_arguments_keep_the_batchmean_division(reference: str) -> None:
    """torch quirk: reduce=True with reduction='batchmean' is legacy 'mean', then divided by N again."""
    rng = _rng("kl-legacy")
    log_q = np.log(rng.dirichlet(np.ones(4), size=3))
    p = rng.dirichlet(np.ones(4), size=3)
    for legacy in ({"reduce": True}, {"reduce": False}, {"size_average": False}):
        check_against(
            REFERENCES[reference],
            "kl_div",
            log_q,
            p,
            rng=rng,
            reduction="batchmean",
            **legacy,
        )
