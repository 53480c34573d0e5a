"""crossent.fused.LinearCrossEntropyLoss against torch.nn.LinearCrossEntropyLoss (torch 2.13)."""

from __future__ import annotations

import re

import pytest
import torch

from crossent.fused import LinearCrossEntropyLoss

F64 = torch.float64


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("out_features", [(), (2, 3)], ids=["plain", "k-dim"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_torch_module(bias, out_features, reduction):
    kwargs = dict(out_features=out_features, bias=bias, dtype=F64, reduction=reduction, label_smoothing=0.1)
    ours = LinearCrossEntropyLoss(6, 5, weight=torch.rand(5, dtype=F64) + 0.5, chunk_size=3, **kwargs)
    theirs = torch.nn.LinearCrossEntropyLoss(6, 5, weight=ours.weight.clone(), **kwargs)
    theirs.load_state_dict(ours.state_dict())
    h = torch.randn(7, 6, dtype=F64)
    y = torch.randint(0, 5, (7, *out_features))
    y.view(-1)[::4] = -100
    out, expected = ours(h, y), theirs(h, y)
    torch.testing.assert_close(out, expected)
    g = torch.rand_like(out)
    for a, e in zip(
        torch.autograd.grad(out, list(ours.parameters()), g),
        torch.autograd.grad(expected, list(theirs.parameters()), g),
        strict=True,
    ):
        torch.testing.assert_close(a, e)


def test_state_dict_keys_match_torch():
    ours = LinearCrossEntropyLoss(4, 3, bias=True, weight=torch.ones(3))
    theirs = torch.nn.LinearCrossEntropyLoss(4, 3, bias=True, weight=torch.ones(3))
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_constructor_errors_match_torch():
    for kwargs in ({"weight": torch.ones(4)}, {"label_smoothing": 1.5}):
        with pytest.raises(RuntimeError) as expected:
            torch.nn.LinearCrossEntropyLoss(4, 3, **kwargs)
        with pytest.raises(RuntimeError, match=re.escape(str(expected.value))):
            LinearCrossEntropyLoss(4, 3, **kwargs)
