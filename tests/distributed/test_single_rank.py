"""vocab_parallel_cross_entropy on a process group of one rank, in the test process itself.

With one rank the shard is the whole vocabulary, so the function must equal torch exactly; this
is where float64 gradcheck and property tests run cheaply (the sharded cases run in
``test_vocab_parallel``, on spawned ranks).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import crossent
from crossent.distributed import (
    count_targets,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
    vocab_range,
)

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def group() -> Iterator[dist.ProcessGroup]:
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("probability", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradcheck(group: dist.ProcessGroup, probability: bool, weighted: bool, reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 2, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.rand(5, dtype=torch.float64, generator=g) + 0.5 if weighted else None
    if probability:
        t = torch.rand(4, 5, 2, dtype=torch.float64, generator=g).requires_grad_()
        inputs: tuple[torch.Tensor, ...] = (x, t) if w is None else (x, t, w.requires_grad_())
    else:
        t = torch.tensor([[0, 4], [-100, 2], [1, 1], [3, -100]])
        inputs = (x,)

    def loss(*args: torch.Tensor) -> torch.Tensor:
        target = args[1] if probability else t
        weight = args[2] if len(args) > 2 else w
        return vocab_parallel_cross_entropy(
            args[0], target, weight, reduction=reduction, label_smoothing=0.2, process_group=group
        )

    assert torch.autograd.gradcheck(loss, inputs)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 5),
    c=st.integers(1, 9),
    spatial=st.sampled_from([(), (3,), (2, 2)]),
    eps=st.sampled_from([0.0, 0.1, 1.0]),
    reduction=st.sampled_from(["none", "sum", "mean"]),
    ignore_share=st.floats(0.0, 1.0),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_equals_torch(
    group: dist.ProcessGroup,
    n: int,
    c: int,
    spatial: tuple[int, ...],
    eps: float,
    reduction: str,
    ignore_share: float,
    scale: float,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, *spatial, dtype=torch.float64, generator=g) * scale).requires_grad_()
    y = torch.randint(0, c, (n, *spatial), generator=g)
    y[torch.rand(y.shape, generator=g) < ignore_share] = -100
    expected = F.cross_entropy(x, y, reduction=reduction, label_smoothing=eps)
    actual = vocab_parallel_cross_entropy(x, y, reduction=reduction, label_smoothing=eps, process_group=group)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    if expected.numel():
        (g_expected,) = torch.autograd.grad(expected.sum(), x)
        (g_actual,) = torch.autograd.grad(actual.sum(), x)
        torch.testing.assert_close(g_actual, g_expected, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_vocab_range_and_count_on_one_rank(group: dist.ProcessGroup) -> None:
    assert vocab_range(5, group) == (0, 5)
    assert int(count_targets(torch.tensor([0, -100, 3]), process_group=group)) == 2


def test_process_group_must_be_a_group(group: dist.ProcessGroup) -> None:
    with pytest.raises(TypeError, match="must be a torch.distributed.ProcessGroup"):
        vocab_parallel_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), process_group=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("probability", [False, True])
def test_a_per_class_focal_loss_is_refused_on_shards_by_name(group: dist.ProcessGroup, probability: bool) -> None:
    h, w = torch.randn(4, 3), torch.randn(5, 3)
    target = torch.randn(4, 5).softmax(1) if probability else torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="vocab shards do not hold in one place"):
        vocab_parallel_linear_cross_entropy(
            h, w, target, process_group=group, focal_gamma=2.0, label_smoothing=0.0 if probability else 0.1
        )


@pytest.mark.parametrize(
    "options", [{"inplace_backward": True}, {"impl": "triton"}, {"_modulation": (2.0, 0.0)}], ids=str
)
def test_what_the_vocab_parallel_cross_entropy_refuses_is_named(group: dist.ProcessGroup, options: dict) -> None:
    x, target = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="the vocab-parallel cross_entropy .* takes neither inplace_backward"):
        crossent.cross_entropy(x * 1.0, target, process_group=group, **options)
