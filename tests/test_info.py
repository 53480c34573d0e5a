"""crossent.info against scipy, its own identities, torch autograd, and the seeds' worked examples."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossent.info as info
import crossent.numpy as cnp

LOG2 = math.log(2.0)


def _distributions(rows: int, classes: int, seed: int, *, zeros: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.uniform(size=(rows, classes))
    if zeros:
        raw[rng.uniform(size=raw.shape) < 0.3] = 0.0
        raw[:, 0] += 0.1  # every row keeps some mass
    return raw / raw.sum(axis=-1, keepdims=True)


# --- the seeds' worked examples ---------------------------------------------------------------


def test_seed_cat_pig_dog_one_hot_is_the_negative_log_likelihood() -> None:
    """A cat (one-hot over cat, pig, dog) predicted as (0.6, 0.2, 0.2) costs -log 0.6 = -log q(cat)."""
    cat, prediction = [1.0, 0.0, 0.0], [0.6, 0.2, 0.2]
    assert info.cross_entropy(cat, prediction) == pytest.approx(-math.log(0.6), rel=1e-15)
    assert info.entropy(cat) == 0.0
    assert info.kl_divergence(cat, prediction) == pytest.approx(-math.log(0.6), rel=1e-15)
    # The same number from the loss: logits whose softmax is the prediction, class index 0.
    logits = np.log(np.array([prediction]))
    assert float(cnp.cross_entropy(logits, np.array([0]))) == pytest.approx(-math.log(0.6), rel=1e-14)


def test_seed_one_target_against_two_predictions() -> None:
    """p = (1, 0, 0): q2 = (0.8, 0.1, 0.1) is closer to p than q1 = (0.5, 0.2, 0.3), so its cross-entropy is lower."""
    p, q1, q2 = [1.0, 0.0, 0.0], [0.5, 0.2, 0.3], [0.8, 0.1, 0.1]
    assert info.cross_entropy(p, q1) == pytest.approx(math.log(2.0), rel=1e-15)
    assert info.cross_entropy(p, q2) == pytest.approx(-math.log(0.8), rel=1e-15)
    assert info.cross_entropy(p, q1, base=2) == pytest.approx(1.0, rel=1e-15)
    assert info.cross_entropy(p, q2) < info.cross_entropy(p, q1)


def test_seed_marksmen_bernoulli_entropies() -> None:
    """Hit probabilities 0.1 and 0.999: 0.469 bits and 0.0114 bits; the surer marksman is less uncertain."""
    both = info.binary_entropy([0.1, 0.999], base=2)
    np.testing.assert_allclose(both, [0.4689955935892812, 0.0114077577374612], rtol=1e-13)
    np.testing.assert_allclose(info.binary_entropy([0.1, 0.999]), both * LOG2, rtol=1e-14)
    assert both[1] < both[0]
    np.testing.assert_allclose(both, [info.entropy([0.1, 0.9], base=2), info.entropy([0.999, 0.001], base=2)])


def test_seed_information_content() -> None:
    np.testing.assert_allclose(info.self_information([1.0, 0.5, 0.1]), [0.0, LOG2, -math.log(0.1)], rtol=1e-15)
    assert info.self_information(0.0) == np.inf


# --- against scipy ----------------------------------------------------------------------------


@pytest.mark.parametrize("base", [None, 2, 10, math.e, 0.5])
def test_matches_scipy_on_distributions(base: float | None) -> None:
    p, q = _distributions(5, 7, 0, zeros=True), _distributions(5, 7, 1)
    np.testing.assert_allclose(info.entropy(p, base=base), scipy.stats.entropy(p, base=base, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(
        info.kl_divergence(p, q, base=base), scipy.stats.entropy(p, q, base=base, axis=-1), rtol=1e-12, atol=1e-15
    )
    nats = scipy.special.rel_entr(p, q).sum(axis=-1)
    np.testing.assert_allclose(info.kl_divergence(p, q), nats, rtol=1e-12, atol=1e-15)
    cross = scipy.stats.entropy(p, base=base, axis=-1) + scipy.stats.entropy(p, q, base=base, axis=-1)
    np.testing.assert_allclose(info.cross_entropy(p, q, base=base), cross, rtol=1e-13)
    # scipy takes the square root of JS in the given base, which fails for bases below 1.
    jensen_shannon = scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2 / math.log(base or math.e)
    np.testing.assert_allclose(info.js_divergence(p, q, base=base), jensen_shannon, rtol=1e-12, atol=1e-15)


def test_normalize_reproduces_scipy_on_unnormalised_counts() -> None:
    """scipy.stats.entropy always divides by the sum (and uses axis 0); crossent.info only with normalize=True."""
    counts = np.array([[1, 3, 0], [2, 2, 4]])
    other = np.array([[2, 1, 1], [5, 1, 2]])
    np.testing.assert_allclose(info.entropy(counts, dim=0, normalize=True), scipy.stats.entropy(counts), rtol=1e-14)
    np.testing.assert_allclose(
        info.kl_divergence(counts, other, normalize=True), scipy.stats.entropy(counts, other, axis=1), rtol=1e-13
    )
    np.testing.assert_allclose(
        info.js_divergence(counts, other, normalize=True),
        scipy.spatial.distance.jensenshannon(counts, other, axis=1) ** 2,
        rtol=1e-12,
    )
    # Without normalize the counts are used as given: -Σ c log c, not scipy's number.
    unnormalised = info.entropy(np.array([2.0, 2.0]))
    assert unnormalised == pytest.approx(-4 * math.log(2.0))
    assert scipy.stats.entropy([2.0, 2.0]) == pytest.approx(math.log(2.0))


# --- conventions and errors -------------------------------------------------------------------


def test_zero_log_zero_and_infinite_surprise() -> None:
    assert info.entropy([0.0, 1.0]) == 0.0
    assert not np.signbit(info.entropy([0.0, 1.0]))  # +0, not -0
    assert info.cross_entropy([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert info.cross_entropy([0.5, 0.5], [0.0, 1.0]) == np.inf
    assert info.kl_divergence([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert info.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert info.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(LOG2)
    assert info.entropy(np.zeros(0)) == 0.0
    assert np.isnan(info.entropy([np.nan, 0.5]))


def test_inputs_and_outputs() -> None:
    result = info.entropy([[0.5, 0.5], [0.9, 0.1]])
    assert isinstance(result, np.ndarray) and result.shape == (2,) and result.dtype == np.float64
    assert isinstance(info.entropy([0.5, 0.5]), np.ndarray)
    assert info.entropy(np.array([0.5, 0.5], np.float32)).dtype == np.float32
    assert info.entropy(np.array([1, 1]), normalize=True) == pytest.approx(LOG2)  # integer counts
    p = _distributions(3, 4, 2)
    np.testing.assert_allclose(info.entropy(p.T, dim=0), info.entropy(p), rtol=1e-15)
    np.testing.assert_allclose(info.kl_divergence(p[None], p[None, ::-1], dim=2)[0], info.kl_divergence(p, p[::-1]))


@pytest.mark.parametrize("base", [0, 1, -2.0, 1.0, float("nan"), float("inf")])
def test_bad_base_is_a_value_error(base: float) -> None:
    with pytest.raises(ValueError, match=f"base must be a finite number > 0 other than 1, got {base}"):
        info.entropy([0.5, 0.5], base=base)
    with pytest.raises(ValueError, match="base must be"):
        info.self_information(torch.tensor([0.5]), base=base)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="p must be non-negative, found -0.1"):
        info.entropy([0.6, 0.5, -0.1])
    with pytest.raises(ValueError, match="q must be non-negative, found -1.0"):
        info.kl_divergence([0.5, 0.5], [2.0, -1.0])
    with pytest.raises(ValueError, match=r"p must be non-negative, found -0.5"):
        info.js_divergence(torch.tensor([-0.5, 1.5]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(2,\)"):
        info.cross_entropy([0.2, 0.3, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"same shape, got \(2, 2\) and \(2,\)"):
        info.kl_divergence(torch.full((2, 2), 0.5), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], found 1.5"):
        info.binary_entropy([0.5, 1.5])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], found -0.5"):
        info.self_information(-0.5)
    with pytest.raises(TypeError, match="base must be a real number"):
        info.entropy([0.5, 0.5], base="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="complex"):
        info.entropy(np.array([0.5, 0.5], complex))


# --- torch tensors ----------------------------------------------------------------------------


def test_tensors_in_tensors_out_and_same_numbers() -> None:
    p, q = _distributions(4, 5, 3, zeros=True), _distributions(4, 5, 4)
    for name in ("cross_entropy", "kl_divergence", "js_divergence"):
        expected = getattr(info, name)(p, q, base=2)
        result = getattr(info, name)(torch.from_numpy(p), torch.from_numpy(q), base=2)
        assert isinstance(result, torch.Tensor) and result.dtype == torch.float64
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-15, atol=1e-16)
        mixed = getattr(info, name)(p, torch.from_numpy(q), base=2)  # one tensor makes the result a tensor
        assert isinstance(mixed, torch.Tensor)
    for name in ("self_information", "binary_entropy", "entropy"):
        result = getattr(info, name)(torch.from_numpy(p))
        np.testing.assert_allclose(result.numpy(), getattr(info, name)(p), rtol=1e-15)
    assert info.entropy(torch.tensor([0.5, 0.5])).dtype == torch.float32
    assert info.entropy(torch.tensor([1, 1]), normalize=True).dtype == torch.get_default_dtype()


def test_tensor_gradients() -> None:
    p = torch.from_numpy(_distributions(3, 4, 5))
    logits = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    q = torch.softmax(logits, dim=-1)
    # d H(p, q) / d q = -p / q, d H(p) / d p = -(log p + 1).
    (grad_q,) = torch.autograd.grad(info.cross_entropy(p, q).sum(), q)
    torch.testing.assert_close(grad_q, -p / q)
    p_leaf = p.clone().requires_grad_(True)
    (grad_p,) = torch.autograd.grad(info.entropy(p_leaf).sum(), p_leaf)
    torch.testing.assert_close(grad_p, -(torch.log(p) + 1))
    # Cross-entropy of softmax(logits) against p has the familiar gradient softmax - p.
    (grad_logits,) = torch.autograd.grad(info.cross_entropy(p, q).sum(), logits)
    torch.testing.assert_close(grad_logits, q - p)
    inputs = (p.clone().requires_grad_(True), q.detach().clone().requires_grad_(True))
    for fn in (info.kl_divergence, info.js_divergence, info.cross_entropy):
        assert torch.autograd.gradcheck(lambda a, b, fn=fn: fn(a, b, base=2), inputs)


def test_one_hot_cross_entropy_is_torch_cross_entropy() -> None:
    """With one-hot p and q = softmax(logits), H(p, q) per row is torch's cross_entropy with reduction='none'."""
    logits = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    one_hot = torch.nn.functional.one_hot(labels, 5).to(torch.float64)
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(info.cross_entropy(one_hot, torch.softmax(logits, dim=-1)), expected)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(info, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


# --- identities (hypothesis) ------------------------------------------------------------------


def _probability_vectors(size: int, *, positive: bool = False) -> st.SearchStrategy[np.ndarray]:
    low = 1e-6 if positive else 0.0
    elements = st.floats(low, 1.0, allow_nan=False, allow_subnormal=False)
    return (
        hnp.arrays(np.float64, size, elements=elements)
        .filter(lambda raw: raw.sum() > 1e-3)
        .map(lambda raw: raw / raw.sum())
    )


@st.composite
def _pairs(draw: st.DrawFn, *, positive_q: bool = False) -> tuple[np.ndarray, np.ndarray]:
    size = draw(st.integers(1, 8))
    return draw(_probability_vectors(size)), draw(_probability_vectors(size, positive=positive_q))


@settings(max_examples=150, deadline=None)
@given(_pairs(positive_q=True))
def test_decomposition_and_gibbs_inequality(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """H(p, q) = H(p) + KL(p || q), and KL >= 0 so H(p, q) >= H(p)."""
    p, q = pair
    cross, own, kl = info.cross_entropy(p, q), info.entropy(p), info.kl_divergence(p, q)
    assert kl >= -1e-12
    assert cross == pytest.approx(own + kl, rel=1e-10, abs=1e-12)
    assert info.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(_pairs())
def test_js_is_symmetric_and_bounded(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = pair
    js = info.js_divergence(p, q)
    assert -1e-12 <= js <= LOG2 + 1e-12
    assert js == pytest.approx(info.js_divergence(q, p), rel=1e-12, abs=1e-15)
    assert info.js_divergence(p, q, base=2) <= 1 + 1e-12


@settings(max_examples=100, deadline=None)
@given(_pairs(), st.sampled_from([None, 2, 10]))
def test_torch_and_numpy_inputs_agree(pair: tuple[np.ndarray, np.ndarray], base: int | None) -> None:
    p, q = pair
    for name in ("cross_entropy", "kl_divergence", "js_divergence"):
        from_numpy = getattr(info, name)(p, q, base=base)
        from_torch = getattr(info, name)(torch.from_numpy(p), torch.from_numpy(q), base=base)
        np.testing.assert_allclose(from_torch.numpy(), from_numpy, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(info.entropy(torch.from_numpy(p), base=base).numpy(), info.entropy(p, base=base))


def test_subnormal_probabilities_stay_finite() -> None:
    """1/p overflows for p below 1/DBL_MAX; the surprisal must not go through it."""
    tiny = np.nextafter(1 / np.finfo(np.float64).max, 0)
    p = np.array([tiny, 0.25, 0.25, 0.25, 0.25])
    q = np.full(5, 0.2)
    assert np.isfinite(info.self_information(p)).all()
    assert info.cross_entropy(p, q) == pytest.approx(info.entropy(p) + info.kl_divergence(p, q), rel=1e-10)
    assert np.signbit(info.self_information([1.0])).item() is False
