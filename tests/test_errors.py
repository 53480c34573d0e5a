"""Bad input raises the exception class torch raises, with torch's message (the spec's catalogue)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import crossent

x35 = torch.randn(3, 5)
t3 = torch.tensor([1, 0, 2])
P35 = torch.rand(3, 5)

CASES = {
    "target-out-of-range": lambda F: F.cross_entropy(x35, torch.tensor([1, 0, 5])),
    "negative-target": lambda F: F.cross_entropy(x35, torch.tensor([1, 0, -1])),
    "target-out-of-range-kdim": lambda F: F.cross_entropy(torch.randn(2, 3, 4), torch.full((2, 4), 7)),
    "nll-target-out-of-range": lambda F: F.nll_loss(x35, torch.tensor([1, 9, 2]), reduction="sum"),
    "batch-mismatch": lambda F: F.cross_entropy(x35, torch.tensor([1, 0])),
    "zero-dim-target": lambda F: F.cross_entropy(torch.randn(2, 3), torch.tensor(0)),
    "zero-dim-input-vector-target": lambda F: F.cross_entropy(torch.tensor(1.0), torch.tensor([0])),
    "zero-dim-input-long-input": lambda F: F.cross_entropy(torch.tensor(1), torch.tensor([0, 1])),
    "float-target": lambda F: F.cross_entropy(x35, torch.tensor([1.0, 0.0, 2.0])),
    "int32-target": lambda F: F.cross_entropy(x35, t3.int()),
    "uint8-target-4d": lambda F: F.cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.uint8)),
    "long-prob-target": lambda F: F.cross_entropy(x35, torch.zeros(3, 5, dtype=torch.long)),
    "long-prob-target-1d": lambda F: F.cross_entropy(torch.randn(5), torch.zeros(5, dtype=torch.long)),
    "prob-ignore-index": lambda F: F.cross_entropy(x35, P35, ignore_index=0),
    "prob-wrong-classes": lambda F: F.cross_entropy(x35, torch.rand(3, 4)),
    "prob-wrong-batch": lambda F: F.cross_entropy(x35, torch.rand(2, 5)),
    "weight-size": lambda F: F.cross_entropy(x35, t3, weight=torch.ones(4)),
    "weight-2d": lambda F: F.nll_loss(torch.randn(10, 3), torch.zeros(10, dtype=torch.long), weight=torch.ones(1, 3)),
    "prob-weight-size": lambda F: F.cross_entropy(x35, P35, weight=torch.ones(4)),
    "weight-size-kdim": lambda F: F.cross_entropy(
        torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), weight=torch.ones(4)
    ),
    "weight-dtype": lambda F: F.cross_entropy(x35, t3, weight=torch.ones(5, dtype=torch.float64)),
    "weight-requires-grad": lambda F: F.cross_entropy(x35, t3, weight=torch.ones(5, requires_grad=True)),
    "label-smoothing-above-one": lambda F: F.cross_entropy(x35, t3, label_smoothing=1.5),
    "label-smoothing-above-one-prob": lambda F: F.cross_entropy(x35, P35, label_smoothing=1.5),
    "bad-reduction": lambda F: F.cross_entropy(x35, t3, reduction="avg"),
    "bad-reduction-none": lambda F: F.cross_entropy(x35, t3, reduction=None),
    "batchmean-outside-kl": lambda F: F.binary_cross_entropy(torch.rand(3), torch.rand(3), reduction="batchmean"),
    "3d-target-size": lambda F: F.cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)),
    "3d-target-rank": lambda F: F.cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, dtype=torch.long)),
    "4d-target-size": lambda F: F.cross_entropy(torch.randn(2, 3, 5, 5), torch.zeros(2, 4, 5, dtype=torch.long)),
    "4d-target-rank": lambda F: F.cross_entropy(torch.randn(2, 3, 5, 5), torch.zeros(2, 5, dtype=torch.long)),
    "5d-target-size": lambda F: F.cross_entropy(torch.randn(2, 3, 5, 5, 2), torch.zeros(2, 4, 5, 2, dtype=torch.long)),
    "multi-target": lambda F: F.cross_entropy(torch.randn(2, 3), torch.zeros(2, 1, dtype=torch.long)),
    "1d-input-long-target": lambda F: F.cross_entropy(torch.randn(3), torch.tensor([0, 1])),
    "scalar-input-prob": lambda F: F.cross_entropy(torch.tensor(1.0), torch.tensor(0.5)),
    "scalar-input-long": lambda F: F.cross_entropy(torch.tensor(1.0), torch.tensor(0)),
    "long-logits": lambda F: F.cross_entropy(torch.ones(3, 5, dtype=torch.long), t3),
    "smoothing-1d-target": lambda F: F.cross_entropy(torch.randn(4), torch.tensor([1]), label_smoothing=0.1),
    "ignore-index-float": lambda F: F.cross_entropy(x35, t3, ignore_index=1.0),
    "nll-scalar": lambda F: F.nll_loss(torch.tensor(1.0), torch.tensor(0)),
    "nll-multi-target": lambda F: F.nll_loss(torch.randn(10, 3), torch.zeros(10, 2, dtype=torch.long)),
    "nll-long-input": lambda F: F.nll_loss(torch.ones(3, 5, dtype=torch.long), t3),
    "log-softmax-long": lambda F: F.log_softmax(torch.ones(3, dtype=torch.long), 0),
    "log-softmax-dim-range": lambda F: F.log_softmax(torch.randn(2, 3), 2),
    "log-softmax-scalar-dim": lambda F: F.log_softmax(torch.tensor(1.0), 1),
    "bce-input-range": lambda F: F.binary_cross_entropy(torch.tensor([1.5]), torch.tensor([0.0])),
    "bce-input-nan": lambda F: F.binary_cross_entropy(torch.tensor([float("nan")]), torch.tensor([0.0])),
    "bce-target-range": lambda F: F.binary_cross_entropy(torch.tensor([0.5]), torch.tensor([1.5])),
    "bce-size": lambda F: F.binary_cross_entropy(torch.rand(3, 1), torch.rand(3)),
    "bce-weight-broadcast": lambda F: F.binary_cross_entropy(torch.rand(3, 2), torch.rand(3, 2), torch.rand(3)),
    "bce-weight-enlarges": lambda F: F.binary_cross_entropy(torch.rand(3, 2), torch.rand(3, 2), torch.rand(4, 3, 2)),
    "bce-target-dtype": lambda F: F.binary_cross_entropy(torch.rand(3), torch.rand(3, dtype=torch.float64)),
    "bce-long": lambda F: F.binary_cross_entropy(torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long)),
    "bcewl-size": lambda F: F.binary_cross_entropy_with_logits(torch.rand(3, 1), torch.rand(3)),
    "bcewl-pos-weight": lambda F: F.binary_cross_entropy_with_logits(
        torch.rand(3, 2), torch.rand(3, 2), pos_weight=torch.rand(3)
    ),
    "bcewl-weight": lambda F: F.binary_cross_entropy_with_logits(torch.rand(3, 2), torch.rand(3, 2), torch.rand(3)),
    "bcewl-pos-weight-enlarges": lambda F: F.binary_cross_entropy_with_logits(
        torch.rand(3, 2), torch.rand(3, 2), pos_weight=torch.rand(4, 3, 2)
    ),
    "bcewl-pos-weight-float": lambda F: F.binary_cross_entropy_with_logits(
        torch.rand(3), torch.rand(3), pos_weight=2.0
    ),
    "bcewl-long-target": lambda F: F.binary_cross_entropy_with_logits(torch.rand(3), torch.ones(3, dtype=torch.long)),
    "bcewl-bool-target": lambda F: F.binary_cross_entropy_with_logits(torch.rand(3), torch.ones(3, dtype=torch.bool)),
    "kl-broadcast": lambda F: F.kl_div(torch.randn(3, 4), torch.rand(3, 5), reduction="sum"),
    "kl-long-target": lambda F: F.kl_div(torch.randn(3), torch.ones(3, dtype=torch.long), reduction="sum"),
    "kl-complex": lambda F: F.kl_div(torch.randn(3, dtype=torch.complex64), torch.rand(3), reduction="sum"),
    "kl-log-target-none": lambda F: F.kl_div(torch.randn(3), torch.rand(3), reduction="sum", log_target=None),
    "list-input": lambda F: F.cross_entropy([[1.0, 2.0]], t3[:1]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_same_exception_and_message_as_torch(case):
    with pytest.raises(Exception) as theirs:
        case(TF)
    with pytest.raises(Exception) as ours:
        case(crossent)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_module_constructors_do_not_validate():
    loss = crossent.nn.CrossEntropyLoss(reduction="foo")
    with pytest.raises(ValueError, match="foo is not a valid value for reduction"):
        loss(x35, t3)


def test_inplace_backward_refuses_leaf_logits():
    logits = torch.randn(3, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inplace_backward=True\) would overwrite a leaf tensor"):
        crossent.cross_entropy(logits, t3, inplace_backward=True)


def test_double_backward_is_a_clear_error():
    x = torch.randn(3, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward .create_graph=True. is not supported"):
        torch.autograd.grad(crossent.cross_entropy(x, t3), x, create_graph=True)
