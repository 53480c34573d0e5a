"""Property-based tests: random shapes and options, torch as the oracle, plus invariances."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crossent
from tests.helpers import check_against

F64 = torch.float64
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
special = st.sampled_from([0.0, -math.inf, 1e30, -1e30, 88.0, -88.0])


@st.composite
def class_index_case(draw):
    n = draw(st.integers(0, 5))
    c = draw(st.integers(1, 7))
    spatial = draw(st.lists(st.integers(0, 3), max_size=2))
    shape = (n, c, *spatial)
    x = torch.randn(shape, dtype=F64) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    if x.numel() and draw(st.booleans()):
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(special)
    t = torch.randint(0, c, (n, *spatial))
    ignore_index = draw(st.sampled_from([-100, 0, c - 1]))
    mask = torch.rand(t.shape) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    t[mask] = ignore_index
    w = torch.rand(c, dtype=F64) + 0.1 if draw(st.booleans()) else None
    reduction = draw(st.sampled_from(["none", "mean", "sum"]))
    eps = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    return x, t, dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=eps)


@SETTINGS
@given(class_index_case())
def test_cross_entropy_matches_torch(case):
    x, t, kwargs = case
    check_against(crossent.cross_entropy, TF.cross_entropy, (x, t), kwargs, atol=1e-10, rtol=1e-9)


@SETTINGS
@given(class_index_case())
def test_nll_loss_matches_torch(case):
    x, t, kwargs = case
    kwargs.pop("label_smoothing")
    check_against(crossent.nll_loss, TF.nll_loss, (x, t), kwargs, atol=1e-10, rtol=1e-9)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 9), st.sampled_from([0.0, 0.3]))
def test_integer_labels_equal_one_hot_probabilities(n, c, eps):
    x = torch.randn(n, c, dtype=F64)
    t = torch.randint(0, c, (n,))
    one_hot = torch.zeros(n, c, dtype=F64).scatter_(1, t.unsqueeze(1), 1.0)
    by_index = crossent.cross_entropy(x, t, label_smoothing=eps)
    by_probs = crossent.cross_entropy(x, one_hot, label_smoothing=eps)
    torch.testing.assert_close(by_index, by_probs)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 6), st.floats(-50, 50))
def test_shift_invariance_and_gradient_rows_sum_to_zero(n, c, shift):
    x = torch.randn(n, c, dtype=F64, requires_grad=True)
    t = torch.randint(0, c, (n,))
    loss = crossent.cross_entropy(x, t, label_smoothing=0.1)
    torch.testing.assert_close(crossent.cross_entropy(x + shift, t, label_smoothing=0.1), loss)
    (g,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(g.sum(1), torch.zeros(n, dtype=F64), atol=1e-12, rtol=0)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4))
def test_masked_equals_sliced(n, c, s):
    x = torch.randn(n, c, s, dtype=F64)
    t = torch.randint(0, c, (n, s))
    kept = torch.rand(n, s) < 0.5
    masked = t.masked_fill(~kept, -100)
    sliced_logits = x.movedim(1, -1)[kept]
    if sliced_logits.shape[0] == 0:
        return
    torch.testing.assert_close(
        crossent.cross_entropy(x, masked, reduction="sum"),
        crossent.cross_entropy(sliced_logits, t[kept], reduction="sum"),
    )


@SETTINGS
@given(st.lists(st.integers(0, 4), min_size=1, max_size=3), st.sampled_from(["none", "mean", "sum"]))
def test_binary_with_logits_matches_torch(shape, reduction):
    x = torch.randn(shape, dtype=F64) * 10
    y = torch.rand(shape, dtype=F64)
    pw = torch.rand(shape[-1:], dtype=F64) * 3
    check_against(
        crossent.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        (x, y),
        dict(reduction=reduction, pos_weight=pw),
        grad_args=(0, 1),
    )
