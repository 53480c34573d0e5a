"""A property: native cross_entropy matches torch.nn.functional in float64 for random shapes, options,
upstream gradients and injected extreme logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crossent
from tests.helpers import check_against
from tests.native.native_env import in_float64, needs_native

pytestmark = needs_native

special = st.sampled_from([0.0, -math.inf, 1e30, -1e30, 1e4, -1e4, 88.0, -104.0])


@st.composite
def calls(draw):
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n = draw(st.integers(0, 40))
    c = draw(st.sampled_from([1, 2, 3, 7, 16, 17, 64, 65, 257]))
    one_row = draw(st.booleans()) and n == 1
    shape = (c,) if one_row else (n, c)
    x = torch.randn(shape, generator=gen) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    for _ in range(draw(st.integers(0, 3)) if x.numel() else 0):
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(special)
    options = dict(
        reduction=draw(st.sampled_from(["none", "mean", "sum"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])),
        weight=torch.rand(c, generator=gen) + 0.1 if draw(st.booleans()) else None,
    )
    if draw(st.booleans()):  # probabilities
        target = torch.rand(shape, generator=gen)
    else:
        ignore_index = draw(st.sampled_from([-100, 0, c - 1]))
        target = torch.randint(0, c, shape[:-1], generator=gen)
        mask = torch.rand(target.shape, generator=gen) < draw(st.sampled_from([0.0, 0.3, 1.0]))
        target[mask] = ignore_index
        options["ignore_index"] = ignore_index
        # an ignored row with non-finite logits: see test_cross_entropy.py (its gradient is 0, torch's NaN)
        ignored = (target == ignore_index).view(-1)
        rows = x.view(-1, c)
        rows[ignored] = torch.nan_to_num(rows[ignored], nan=0.0, posinf=0.0, neginf=0.0)
    inplace = draw(st.booleans())
    return x, target, options, inplace


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_native_cross_entropy_matches_float64(call):
    x, target, options, inplace = call

    def ours(x, target, **kwargs):
        logits = x * 1.0 if inplace else x  # in-place writes need a non-leaf
        return crossent.cross_entropy(logits, target, inplace_backward=inplace, impl="native", **kwargs)

    check_against(ours, in_float64(F.cross_entropy), (x, target), options, atol=2e-6, rtol=2e-5)
