"""crossent.distributed without a process group: counting, normalizing, and the errors of misuse."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from dist_checks_failures import COLLISIONS
from hypothesis import given
from hypothesis import strategies as st

import crossent
from crossent import _checks
from crossent.distributed import (
    _consensus,
    count_targets,
    normalization,
    normalized_sum,
    vocab_parallel_cross_entropy,
    vocab_range,
)
from crossent.distributed import cross_entropy as vp_module


def test_count_targets_counts_kept_targets() -> None:
    y = torch.tensor([[0, 2, -100], [2, -100, 1]])
    count = count_targets(y)
    assert count.dtype == torch.int64 and int(count) == 4
    assert int(count_targets(y, ignore_index=2)) == 4  # -100 is then a kept target... of no class
    assert int(count_targets(torch.full((3,), -100))) == 0
    assert int(count_targets(torch.tensor([1, 1], dtype=torch.uint8))) == 2


def test_weighted_count_is_the_mean_divisor() -> None:
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, -100, 2, 1, 0])
    w = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64)
    count = count_targets(y, weight=w)
    assert count.dtype == torch.float64
    total = F.cross_entropy(x, y, w, reduction="sum")
    torch.testing.assert_close(total / count, F.cross_entropy(x, y, w), rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    ("target", "weight", "error", "match"),
    [
        (torch.tensor([0.0, 1.0]), None, TypeError, "integer dtype"),
        ([0, 1], None, TypeError, "must be Tensor, not list"),
        (torch.tensor([0, 3]), torch.ones(3), IndexError, "Target 3 is out of bounds"),
        (torch.tensor([0, 1]), torch.ones(2, 2), ValueError, r"1-D floating tensor \(C,\)"),
    ],
)
def test_count_targets_errors(target: object, weight: torch.Tensor | None, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        count_targets(target, weight=weight)  # type: ignore[arg-type]


def test_normalized_sum_is_sum_over_normalizer_with_gradient() -> None:
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, -100, 1, 1])
    for normalizer in (7, 2.5, torch.tensor(7), torch.tensor([2.5], dtype=torch.float64)):
        out = normalized_sum(crossent.cross_entropy(x, y, reduction="none"), normalizer)
        expected = F.cross_entropy(x, y, reduction="sum") / float(normalizer)
        torch.testing.assert_close(out, expected, rtol=1e-15, atol=0)
        (g,) = torch.autograd.grad(out, x)
        (g_expected,) = torch.autograd.grad(expected, x)
        torch.testing.assert_close(g, g_expected, rtol=1e-15, atol=1e-18)


def test_normalized_sum_accumulates_half_precision_in_float32() -> None:
    """4096 losses of about 20 sum to 8e4, past float16's 65504, though their mean is small."""
    loss = torch.full((4096,), 20.0, dtype=torch.float16)
    assert torch.isinf(loss.sum())
    out = normalized_sum(loss, 4096)
    assert out.dtype == torch.float16 and float(out) == 20.0


@pytest.mark.parametrize(
    ("normalizer", "error", "match"),
    [
        (True, TypeError, "number or a Tensor, not bool"),
        ("8", TypeError, "number or a Tensor, not str"),
        (torch.ones(2), ValueError, r"one value, but got a tensor of shape \[2\]"),
    ],
)
def test_normalizer_errors(normalizer: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        normalized_sum(torch.ones(3), normalizer)  # type: ignore[arg-type]


def test_normalizer_refuses_reduction_none() -> None:
    with pytest.raises(ValueError, match="use reduction='sum' or 'mean', not 'none'"):
        _checks.check_normalizer(4, "none", "cross_entropy")


def test_collective_functions_need_an_initialized_process_group() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        vocab_parallel_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), process_group=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="init_process_group"):
        count_targets(torch.tensor([0]), process_group=object())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="init_process_group"):
        vocab_range(3, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", [normalization, vp_module])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0


@pytest.mark.parametrize("variant", COLLISIONS)
def test_target_digest_tells_apart_what_a_24_bit_digest_confused(variant: str) -> None:
    positions, _, changes = COLLISIONS[variant]
    ours, theirs = torch.zeros(positions, dtype=torch.int64), torch.zeros(positions, dtype=torch.int64)
    for position, (a, b) in changes.items():
        ours[position], theirs[position] = a, b
    assert int(_consensus.target_digest(ours)) != int(_consensus.target_digest(theirs))


int64s = st.integers(-(2**63), 2**63 - 1)


@given(st.lists(int64s, min_size=1, max_size=40), st.data())
def test_target_digest_always_sees_one_changed_target(values: list[int], data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(values) - 1))
    changed = list(values)
    changed[position] = data.draw(int64s.filter(lambda v: v != values[position]))
    digest = _consensus.target_digest
    assert int(digest(torch.tensor(values))) != int(digest(torch.tensor(changed)))


def test_target_digest_depends_on_values_and_order_only() -> None:
    t = torch.tensor([[3, 1, 4], [1, 5, 9]])
    digest = int(_consensus.target_digest(t))
    assert digest == int(_consensus.target_digest(t.t().contiguous().t()))  # the layout does not matter
    assert digest == int(_consensus.target_digest(t.to(torch.uint8)))  # nor the integer dtype
    assert digest != int(_consensus.target_digest(t.flip(1)))
