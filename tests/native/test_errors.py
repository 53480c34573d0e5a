"""What the native path refuses, and with which error: torch's own where torch has one."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import crossent
from tests.native.native_env import needs_native

pytestmark = needs_native


@pytest.mark.parametrize(
    "targets, bad",
    [([0, 7, 1], 7), ([0, -5, 1], -5), ([5, 1, 2], 5), ([9, 7, -100], 9)],
    ids=["too-large", "negative", "C", "first-of-two"],
)
@pytest.mark.parametrize("probe", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("impl", ["native", "auto"])
def test_out_of_range_class_targets(targets, bad, probe, impl):
    x = torch.randn(3, 5, requires_grad=True)
    t = torch.tensor(targets)
    message = f"Target {bad} is out of bounds."
    with pytest.raises(IndexError, match=re.escape(message)):
        getattr(F, probe)(x, t)  # torch's error, to be matched
    with pytest.raises(IndexError, match=f"^{re.escape(message)}$"):
        getattr(crossent, probe)(x, t, impl=impl)
    with pytest.raises(IndexError, match=re.escape(message)):
        crossent.cross_entropy(x.detach().bfloat16(), t, label_smoothing=0.1, reduction="none", impl=impl)


def test_an_ignored_target_is_not_range_checked():
    x = torch.randn(3, 5)
    t = torch.tensor([7, 1, 7])
    expected = F.cross_entropy(x, t, ignore_index=7, reduction="none")
    torch.testing.assert_close(crossent.cross_entropy(x, t, ignore_index=7, reduction="none", impl="native"), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_binary_cross_entropy_outside_the_unit_interval(dtype, reduction):
    x = torch.rand(5000).to(dtype)  # the bad value in the second chunk of 4096
    y = torch.rand(5000).to(dtype)
    for name, bad_x, bad_y in [
        ("input", x.clone().index_fill_(0, torch.tensor([4500]), 1.5), y),
        ("input", x.clone().index_fill_(0, torch.tensor([3]), -0.25), y),
        ("input", x.clone().index_fill_(0, torch.tensor([4999]), math.nan), y),
        ("target", x, y.clone().index_fill_(0, torch.tensor([4200]), 2.0)),
        ("target", x, y.clone().index_fill_(0, torch.tensor([0]), -1e-3)),
    ]:
        message = f"all elements of {name} should be between 0 and 1"
        with pytest.raises(RuntimeError, match=message):
            F.binary_cross_entropy(bad_x, bad_y)
        with pytest.raises(RuntimeError, match=message):
            crossent.binary_cross_entropy(bad_x, bad_y, reduction=reduction, impl="native")
    # the input is checked first when both are outside
    with pytest.raises(RuntimeError, match="of input"):
        crossent.binary_cross_entropy(x + 2, y + 2, impl="native")


F64 = dict(dtype=torch.float64)


@pytest.mark.parametrize(
    "call",
    [
        lambda: crossent.cross_entropy(torch.randn(4, 5, **F64), torch.zeros(4, dtype=torch.long), impl="native"),
        lambda: crossent.cross_entropy(torch.randn(4, 5, **F64), torch.rand(4, 5, **F64), impl="native"),
        lambda: crossent.log_softmax(torch.randn(4, 5, **F64), 1, impl="native"),
        lambda: crossent.softmax(torch.randn(4, 5, **F64), 1, impl="native"),
        lambda: crossent.nll_loss(torch.randn(4, 5, **F64), torch.zeros(4, dtype=torch.long), impl="native"),
        lambda: crossent.binary_cross_entropy(torch.rand(4, **F64), torch.rand(4, **F64), impl="native"),
        lambda: crossent.binary_cross_entropy_with_logits(torch.randn(4, **F64), torch.rand(4), impl="native"),
        lambda: crossent.kl_div(torch.randn(4, **F64), torch.rand(4, **F64), reduction="sum", impl="native"),
    ],
    ids=["cross_entropy", "probabilities", "log_softmax", "softmax", "nll_loss", "bce", "bce_with_logits", "kl_div"],
)
def test_float64_is_refused(call):
    with pytest.raises(RuntimeError, match="impl='native' cannot run .*float64"):
        call()


def _zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.long)


UNSUPPORTED = {
    "spatial": (lambda: crossent.cross_entropy(torch.randn(2, 3, 4, 4), _zeros(2, 4, 4), impl="native"), "last dim"),
    "spatial-probabilities": (
        lambda: crossent.cross_entropy(torch.randn(2, 3, 4), torch.rand(2, 3, 4), impl="native"),
        "last dim",
    ),
    "dim-0": (lambda: crossent.log_softmax(torch.randn(4, 5), 0, impl="native"), "last dim"),
    "dim-inner": (lambda: crossent.softmax(torch.randn(4, 5, 2), 1, impl="native"), "last dim"),
    "target-grad": (
        lambda: crossent.cross_entropy(torch.randn(3, 5), torch.rand(3, 5, requires_grad=True), impl="native"),
        "probability targets",
    ),
    "mixed": (
        lambda: crossent.cross_entropy(torch.randn(3, 5), torch.rand(3, 5).bfloat16(), impl="native"),
        "one dtype",
    ),
    "bce-weight": (
        lambda: crossent.binary_cross_entropy(torch.rand(4, 3), torch.rand(4, 3), torch.rand(4, 1), impl="native"),
        "leading dims",
    ),
    "kl-broadcast": (
        lambda: crossent.kl_div(torch.randn(4, 3), torch.rand(1, 3), reduction="sum", impl="native"),
        "leading dims",
    ),
    "no-classes": (lambda: crossent.cross_entropy(torch.randn(3, 0), _zeros(3), impl="native"), "no classes"),
}


@pytest.mark.parametrize("call, reason", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_what_native_cannot_run_raises(call, reason):
    with pytest.raises(RuntimeError, match=f"impl='native' cannot run .*{reason}.*Available here: 'torch'"):
        call()


def test_an_unknown_impl():
    x, t = torch.randn(3, 5), torch.tensor([0, 1, 2])
    for call in (
        lambda: crossent.cross_entropy(x, t, impl="natve"),
        lambda: crossent.log_softmax(x, 1, impl="Native"),
        lambda: crossent.binary_cross_entropy_with_logits(x, x, impl="cpu"),
    ):
        with pytest.raises(ValueError, match="impl must be one of 'auto', 'torch', 'native', 'triton'"):
            call()


def test_inplace_backward_refuses_a_leaf():
    x = torch.randn(3, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="would overwrite a leaf tensor"):
        crossent.cross_entropy(x, torch.tensor([0, 1, 2]), inplace_backward=True, impl="native")


def test_double_backward_is_refused():
    x = torch.randn(3, 5, requires_grad=True)
    for loss in (
        crossent.cross_entropy(x, torch.tensor([0, 1, 2]), impl="native"),
        crossent.log_softmax(x, 1, impl="native").sum(),
        crossent.binary_cross_entropy_with_logits(x, torch.rand(3, 5), impl="native"),
    ):
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(loss, x, create_graph=True)
