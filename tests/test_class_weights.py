"""crossent.class_weights: each method against a hand computation, normalisation, limits, dtypes, errors."""

from __future__ import annotations

import math

import pytest
import torch

import crossent

COUNTS = [900, 90, 10]


def _normalised(raw: list[float]) -> torch.Tensor:
    total = sum(raw)
    return torch.tensor([len(raw) * r / total for r in raw], dtype=torch.float64)


@pytest.mark.parametrize(
    ("method", "kwargs", "raw"),
    [
        ("inverse", {}, [1 / n for n in COUNTS]),
        ("inverse_sqrt", {}, [1 / math.sqrt(n) for n in COUNTS]),
        ("effective", {"beta": 0.99}, [(1 - 0.99) / (1 - 0.99**n) for n in COUNTS]),
        ("effective", {"beta": 0.999}, [(1 - 0.999) / (1 - 0.999**n) for n in COUNTS]),
    ],
)
def test_methods_against_hand_computation(method, kwargs, raw):
    w = crossent.class_weights(torch.tensor(COUNTS, dtype=torch.float64), method=method, **kwargs)
    torch.testing.assert_close(w, _normalised(raw), rtol=1e-12, atol=0)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-12)
    w32 = crossent.class_weights(COUNTS, method=method, **kwargs)
    assert w32.dtype == torch.float32
    torch.testing.assert_close(w32, _normalised(raw).float())


def test_inverse_by_hand():
    # 1/900 : 1/90 : 1/10 = 1 : 10 : 90, mean 1 over 3 classes
    torch.testing.assert_close(crossent.class_weights([900, 90, 10]), torch.tensor([3 / 101, 30 / 101, 270 / 101]))


def test_effective_limits():
    # beta -> 0: every weight is 1; beta -> 1: approaches 'inverse'
    torch.testing.assert_close(crossent.class_weights(COUNTS, method="effective", beta=0.0), torch.ones(3))
    torch.testing.assert_close(crossent.class_weights(COUNTS, method="effective", beta=1e-9), torch.ones(3))
    near_one = crossent.class_weights(COUNTS, method="effective", beta=1 - 1e-9)
    torch.testing.assert_close(near_one, crossent.class_weights(COUNTS), rtol=1e-5, atol=0)


def test_effective_is_accurate_for_beta_near_one_and_large_counts():
    # 1 - beta^n by expm1: no cancellation for beta close to 1
    beta, n = 1 - 1e-12, torch.tensor([1.0, 1e6], dtype=torch.float64)
    w = crossent.class_weights(n, method="effective", beta=beta)
    raw = [1.0, 1e-12 / -math.expm1(1e6 * math.log1p(-1e-12))]
    torch.testing.assert_close(w, _normalised(raw), rtol=1e-9, atol=0)


def test_float_counts_tensor_sequence_and_device():
    counts = torch.tensor([2.5, 5.0], dtype=torch.float16)
    w = crossent.class_weights(counts)
    assert w.dtype == torch.float32 and w.device == counts.device
    torch.testing.assert_close(w, torch.tensor([4 / 3, 2 / 3]))
    assert crossent.class_weights(torch.tensor([3, 1])).dtype == torch.float32
    assert crossent.class_weights((3.0, 1.0)).dtype == torch.float32
    assert crossent.class_weights(torch.tensor([3.0, 1.0], dtype=torch.float64)).dtype == torch.float64
    assert crossent.class_weights(torch.tensor([5])).tolist() == [1.0]


def test_usable_as_cross_entropy_weight():
    counts = torch.tensor([50, 30, 20])
    w = crossent.class_weights(counts)
    x, t = torch.randn(8, 3), torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    torch.testing.assert_close(crossent.cross_entropy(x, t, weight=w), torch.nn.functional.cross_entropy(x, t, w))


@pytest.mark.parametrize(
    ("counts", "kwargs", "error", "match"),
    [
        ([5, 0, 3, 0], {}, ValueError, r"zero counts for classes \[1, 3\].*never occurs"),
        ([5, -1, 3], {}, ValueError, r"negative counts for classes \[1\]"),
        ([5.0, float("nan")], {}, ValueError, r"NaN counts for classes \[1\]"),
        ([5.0, float("inf")], {}, ValueError, r"infinite counts for classes \[1\]"),
        ([[1, 2], [3, 4]], {}, ValueError, r"must be 1-D.*\[2, 2\]"),
        (torch.tensor(3.0), {}, ValueError, r"must be 1-D.*\[\]"),
        ([], {}, ValueError, "counts is empty"),
        ([1, 2], {"method": "log"}, ValueError, "unknown method 'log'"),
        ([1, 2], {"method": "effective", "beta": 1.0}, ValueError, r"beta must be in \[0, 1\).*1\.0"),
        ([1, 2], {"method": "effective", "beta": -0.1}, ValueError, r"beta must be in \[0, 1\)"),
        (torch.tensor([True, False]), {}, TypeError, "real numbers"),
        (["a", "b"], {}, TypeError, "sequence of numbers"),
    ],
)
def test_bad_counts(counts, kwargs, error, match):
    with pytest.raises(error, match=match):
        crossent.class_weights(counts, **kwargs)
