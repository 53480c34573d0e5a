"""Modules: same constructor signatures, buffers and state_dicts as torch.nn; forward == functional."""

from __future__ import annotations

import inspect

import pytest
import torch

import crossent

F64 = torch.float64
PAIRS = ["CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "KLDivLoss", "LogSoftmax", "Softmax"]


@pytest.mark.parametrize("name", PAIRS)
def test_constructor_signature_matches_torch(name):
    """torch's parameters, in torch's order with torch's defaults; crossent's own follow, keyword-only."""
    ours = list(inspect.signature(getattr(crossent.nn, name).__init__).parameters.values())
    theirs = list(inspect.signature(getattr(torch.nn, name).__init__).parameters.values())
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [(p.name, p.default) for p in theirs]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours[len(theirs) :])


def test_class_hierarchy():
    assert issubclass(crossent.nn.CrossEntropyLoss, crossent.nn._WeightedLoss)
    assert issubclass(crossent.nn.NLLLoss, crossent.nn._WeightedLoss)
    assert issubclass(crossent.nn.BCELoss, crossent.nn._WeightedLoss)
    assert issubclass(crossent.nn.BCEWithLogitsLoss, crossent.nn._Loss)
    assert not issubclass(crossent.nn.BCEWithLogitsLoss, crossent.nn._WeightedLoss)
    assert issubclass(crossent.nn.KLDivLoss, crossent.nn._Loss)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("CrossEntropyLoss", {"weight": torch.rand(5)}),
        ("NLLLoss", {"weight": torch.rand(5)}),
        ("BCELoss", {"weight": torch.rand(5)}),
        ("BCEWithLogitsLoss", {"weight": torch.rand(5), "pos_weight": torch.rand(5)}),
        ("BCEWithLogitsLoss", {"pos_weight": torch.rand(5)}),
        ("CrossEntropyLoss", {}),
    ],
)
def test_state_dict_round_trips_with_torch(name, kwargs):
    theirs = getattr(torch.nn, name)(**kwargs)
    ours = getattr(crossent.nn, name)(**{k: torch.zeros_like(v) for k, v in kwargs.items()})
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)
    back = getattr(torch.nn, name)(**{k: torch.zeros_like(v) for k, v in kwargs.items()})
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value)


def test_buffers_follow_dtype_conversion():
    loss = crossent.nn.CrossEntropyLoss(weight=torch.rand(5)).double()
    assert loss.weight is not None and loss.weight.dtype == F64
    bce = crossent.nn.BCEWithLogitsLoss(pos_weight=torch.rand(3)).half()
    assert bce.pos_weight is not None and bce.pos_weight.dtype == torch.float16


def test_forward_equals_torch_module_and_attributes_are_live():
    x = torch.randn(6, 5, dtype=F64)
    t = torch.tensor([0, 4, 2, -100, 1, 1])
    w = torch.rand(5, dtype=F64)
    ours = crossent.nn.CrossEntropyLoss(weight=w, label_smoothing=0.2)
    theirs = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.2)
    torch.testing.assert_close(ours(x, t), theirs(x, t))
    ours.label_smoothing = theirs.label_smoothing = 0.0
    ours.reduction = theirs.reduction = "sum"
    torch.testing.assert_close(ours(x, t), theirs(x, t))


def test_every_module_matches_torch():
    x = torch.randn(4, 3, dtype=F64)
    p = torch.rand(4, 3, dtype=F64)
    t = torch.tensor([0, 2, 1, 1])
    cases = [
        ("NLLLoss", {}, (x.log_softmax(1), t)),
        ("BCELoss", {}, (p, torch.rand(4, 3, dtype=F64))),
        ("BCEWithLogitsLoss", {"pos_weight": torch.rand(3, dtype=F64)}, (x, p)),
        ("KLDivLoss", {"reduction": "batchmean", "log_target": True}, (x.log_softmax(1), p.log())),
        ("LogSoftmax", {"dim": 1}, (x,)),
        ("Softmax", {"dim": 0}, (x,)),
    ]
    for name, kwargs, args in cases:
        torch.testing.assert_close(
            getattr(crossent.nn, name)(**kwargs)(*args), getattr(torch.nn, name)(**kwargs)(*args)
        )


def test_legacy_arguments_map_once_at_construction():
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        loss = crossent.nn.NLLLoss(size_average=False)
    assert loss.reduction == "sum"


def test_repr_matches_torch():
    assert repr(crossent.nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(crossent.nn.LogSoftmax(dim=1)) == "LogSoftmax(dim=1)"
