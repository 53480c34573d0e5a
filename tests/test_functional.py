"""crossent.functional against torch.nn.functional in float64: values and every gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF

import crossent
from tests.helpers import check_against

F64 = torch.float64
REDUCTIONS = ["none", "mean", "sum"]
CLASS_SHAPES = [(5,), (7, 5), (0, 5), (4, 1), (3, 5, 4), (2, 5, 3, 2), (2, 5, 1, 2, 3), (2, 5, 0)]


def class_targets(shape: tuple[int, ...], ignore: str) -> tuple[torch.Tensor, int]:
    """Targets for logits of ``shape`` and the ignore_index that gives the pattern: none, some, all."""
    c = shape[0] if len(shape) == 1 else shape[1]
    t_shape = () if len(shape) == 1 else (shape[0], *shape[2:])
    t = torch.randint(0, c, t_shape)
    if ignore == "none":
        return t, -100
    if ignore == "some":
        t.view(-1)[::2] = -100 if c == 1 else t.view(-1)[::2]
        return t, (-100 if c == 1 else int(t.view(-1)[0]) if t.numel() else 0)
    return torch.full(t_shape, 3), 3


@pytest.mark.parametrize("shape", CLASS_SHAPES, ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore", ["none", "some", "all"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0])
def test_cross_entropy_class_index(shape, weighted, ignore, reduction, eps, block_size):
    x = torch.randn(shape, dtype=F64) * 3
    t, ignore_index = class_targets(shape, ignore)
    c = shape[0] if len(shape) == 1 else shape[1]
    w = torch.rand(c, dtype=F64) + 0.1 if weighted else None
    if eps > 0 and len(shape) == 1 and t.dim() == 1:
        pytest.skip("torch rejects this combination; see test_errors")
    kwargs = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=eps)
    check_against(crossent.cross_entropy, TF.cross_entropy, (x, t), kwargs)


@pytest.mark.parametrize("shape", [(5,), (7, 5), (0, 5), (3, 0), (3, 5, 4), (2, 5, 3, 2)], ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_probabilities(shape, weighted, reduction, eps, block_size):
    x = torch.randn(shape, dtype=F64)
    cd = 0 if len(shape) == 1 else 1
    p = torch.rand(shape, dtype=F64)
    p = p / p.sum(cd, keepdim=True).clamp_min(1e-3)
    w = torch.rand(shape[cd], dtype=F64) + 0.1 if weighted else None
    grad_args = (0, 1, 2) if weighted else (0, 1)
    kwargs = dict(reduction=reduction, label_smoothing=eps)
    check_against(
        lambda x, p, w, **kw: crossent.cross_entropy(x, p, w, **kw),
        lambda x, p, w, **kw: TF.cross_entropy(x, p, w, **kw),
        (x, p, w),
        kwargs,
        grad_args=grad_args,
    )


def test_cross_entropy_unnormalised_probabilities_are_not_validated():
    x = torch.randn(4, 3, dtype=F64)
    t = torch.randn(4, 3, dtype=F64)  # negative "probabilities", rows not summing to 1
    check_against(crossent.cross_entropy, TF.cross_entropy, (x, t), grad_args=(0, 1))


SPECIAL_ROWS = {
    "neg-inf-off-target": [0.0, -math.inf, 1.0],
    "neg-inf-all": [-math.inf, -math.inf, -math.inf],
    "pos-inf": [0.0, math.inf, 1.0],
    "nan": [0.0, math.nan, 1.0],
    "huge": [1e300, -1e300, 0.0],
    "large-equal": [1000.0, 1000.0, 1000.0],
}


@pytest.mark.parametrize("row", SPECIAL_ROWS.values(), ids=SPECIAL_ROWS.keys())
@pytest.mark.parametrize("target", [0, 1, -100])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_special_values(row, target, eps, reduction):
    x = torch.tensor([row, [0.5, 0.2, -0.1]], dtype=F64)
    t = torch.tensor([target, 2])
    check_against(crossent.cross_entropy, TF.cross_entropy, (x, t), dict(label_smoothing=eps, reduction=reduction))


@pytest.mark.parametrize("row", SPECIAL_ROWS.values(), ids=SPECIAL_ROWS.keys())
def test_cross_entropy_special_values_probabilities(row):
    x = torch.tensor([row, [0.5, 0.2, -0.1]], dtype=F64)
    p = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], dtype=F64)
    check_against(crossent.cross_entropy, TF.cross_entropy, (x, p), dict(reduction="none"), grad_args=(0, 1))


def test_cross_entropy_zero_total_weight_gives_nan_and_nan_grads():
    x = torch.randn(3, 4, dtype=F64)
    t = torch.tensor([1, 1, -100])
    w = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64)
    out = check_against(crossent.cross_entropy, TF.cross_entropy, (x, t), dict(weight=w))
    assert out.isnan()


@pytest.mark.parametrize("shape", [(5,), (7, 5), (0, 5), (3, 5, 4), (2, 5, 3, 2), (2, 5, 1, 2, 3)], ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore", ["none", "some", "all"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(shape, weighted, ignore, reduction):
    z = torch.randn(shape, dtype=F64)
    t, ignore_index = class_targets(shape, ignore)
    c = shape[0] if len(shape) == 1 else shape[1]
    w = torch.rand(c, dtype=F64) if weighted else None
    check_against(
        crossent.nll_loss, TF.nll_loss, (z, t), dict(weight=w, ignore_index=ignore_index, reduction=reduction)
    )


def test_nll_loss_uint8_targets_and_unbatched_one_element_target():
    z = torch.randn(4, 3, dtype=F64)
    check_against(crossent.nll_loss, TF.nll_loss, (z, torch.tensor([0, 2, 1, 1], dtype=torch.uint8)))
    # torch's own backward rejects a (C,) input with a (1,) target; ours equals the 0-d target's
    check_against(crossent.nll_loss, TF.nll_loss, (z[0], torch.tensor([2])), grad_args=())
    check_against(lambda z, t: crossent.nll_loss(z, t.reshape(1)), TF.nll_loss, (z[0], torch.tensor(2)))
    check_against(crossent.cross_entropy, TF.cross_entropy, (z[0], torch.tensor([2])), grad_args=())
    check_against(lambda x, t: crossent.cross_entropy(x, t.reshape(1)), TF.cross_entropy, (z[0], torch.tensor(2)))


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@pytest.mark.parametrize(
    "shape,dim", [((), 0), ((), -1), ((5,), 0), ((4, 5), 1), ((4, 5), 0), ((2, 3, 4), 1), ((2, 3, 4), -1), ((0, 3), 1)]
)
def test_softmax_family(op, shape, dim, block_size):
    x = torch.randn(shape, dtype=F64) * 5
    check_against(getattr(crossent, op), getattr(TF, op), (x,), dict(dim=dim))


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
@pytest.mark.parametrize("row", SPECIAL_ROWS.values(), ids=SPECIAL_ROWS.keys())
def test_softmax_family_special_values(op, row):
    x = torch.tensor([row], dtype=F64)
    check_against(getattr(crossent, op), getattr(TF, op), (x,), dict(dim=1))


@pytest.mark.parametrize("op", ["log_softmax", "softmax"])
def test_softmax_family_dtype_argument_and_implicit_dim(op):
    x = torch.arange(6).reshape(2, 3)
    ours = getattr(crossent, op)(x, 1, dtype=F64)
    torch.testing.assert_close(ours, getattr(TF, op)(x, 1, dtype=F64))
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        implicit = getattr(crossent, op)(x.to(F64))
    torch.testing.assert_close(implicit, getattr(TF, op)(x.to(F64), 1))


@pytest.mark.parametrize("shape", [(6,), (4, 3), (2, 3, 4), (0, 3)], ids=str)
@pytest.mark.parametrize("weight_shape", [None, (), "last", "rows"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(shape, weight_shape, reduction, block_size):
    x = torch.rand(shape, dtype=F64).clamp(0.01, 0.99)
    y = torch.rand(shape, dtype=F64)
    w = _broadcast_weight(shape, weight_shape)
    check_against(
        crossent.binary_cross_entropy,
        TF.binary_cross_entropy,
        (x, y),
        dict(weight=w, reduction=reduction),
        grad_args=(0, 1),
    )


def test_binary_cross_entropy_clamps_and_gradient_eps():
    x = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1e-40, 1 - 1e-16], dtype=F64)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0], dtype=F64)
    for reduction in REDUCTIONS:
        check_against(crossent.binary_cross_entropy, TF.binary_cross_entropy, (x, y), dict(reduction=reduction))


def _broadcast_weight(shape, weight_shape):
    if weight_shape is None:
        return None
    if weight_shape == "last":
        return torch.rand(shape[-1], dtype=F64)
    if weight_shape == "rows":
        return torch.rand(shape[0], *([1] * (len(shape) - 1)), dtype=F64)
    return torch.rand(weight_shape, dtype=F64)


@pytest.mark.parametrize("shape", [(6,), (4, 3), (2, 3, 4), (0, 3)], ids=str)
@pytest.mark.parametrize("weight_shape", [None, "last", "rows"])
@pytest.mark.parametrize("pos_weight_shape", [None, (), "last"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits(shape, weight_shape, pos_weight_shape, reduction, block_size):
    x = torch.randn(shape, dtype=F64) * 4
    y = torch.rand(shape, dtype=F64)
    w = _broadcast_weight(shape, weight_shape)
    pw = _broadcast_weight(shape, pos_weight_shape)
    check_against(
        crossent.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        (x, y),
        dict(weight=w, pos_weight=pw, reduction=reduction),
        grad_args=(0, 1),
    )


def test_binary_cross_entropy_with_logits_extremes_and_target_dtype():
    x = torch.tensor([100.0, -100.0, 0.0, math.inf, -math.inf, math.inf, -math.inf], dtype=F64)
    y = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0], dtype=F64)
    check_against(
        crossent.binary_cross_entropy_with_logits,
        TF.binary_cross_entropy_with_logits,
        (x, y),
        dict(reduction="none"),
        grad_args=(0, 1),
    )
    # the result takes the target's dtype
    for xd, yd in [(torch.float32, F64), (F64, torch.float32), (torch.float32, torch.float16)]:
        xs, ys = torch.randn(5, dtype=xd), torch.rand(5, dtype=yd)
        ours = crossent.binary_cross_entropy_with_logits(xs, ys)
        theirs = TF.binary_cross_entropy_with_logits(xs, ys)
        assert ours.dtype == theirs.dtype == yd
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("shapes", [((4, 3), (4, 3)), ((4, 3), (3,)), ((3,), (4, 3)), ((5,), (5,)), ((2, 0), (2, 0))])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
def test_kl_div(shapes, log_target, reduction, block_size):
    x = torch.randn(shapes[0], dtype=F64).log_softmax(-1) if shapes[0][-1] else torch.randn(shapes[0], dtype=F64)
    t = torch.rand(shapes[1], dtype=F64)
    t = t.log() if log_target else t
    check_against(
        crossent.kl_div,
        _kl_div_broadcasting_oracle,
        (x, t),
        dict(reduction=reduction, log_target=log_target),
        grad_args=(0, 1),
    )


def _kl_div_broadcasting_oracle(x, t, reduction, log_target):
    """torch's kl_div, with broadcasting made explicit: torch's own backward fails to reduce a
    broadcast input's gradient ('size {[4, 3]} is not expandable to size {[3]}')."""
    shape = torch.broadcast_shapes(x.shape, t.shape)
    loss = TF.kl_div(x.expand(shape), t.expand(shape), reduction="none", log_target=log_target)
    if reduction == "none":
        return loss
    if reduction == "batchmean" and x.dim() > 0:
        return loss.sum() / x.shape[0]
    return loss.sum()


def test_kl_div_mean_warns_and_zero_targets():
    x = torch.randn(3, 4, dtype=F64)
    t = torch.tensor([[0.0, 0.5, 0.5, 0.0]] * 3, dtype=F64)
    with pytest.warns(UserWarning, match="batchmean"):
        ours = crossent.kl_div(x, t)
    with pytest.warns(UserWarning, match="batchmean"):
        theirs = TF.kl_div(x, t)
    torch.testing.assert_close(ours, theirs)
    check_against(crossent.kl_div, TF.kl_div, (x, t), dict(reduction="none"), grad_args=(0, 1))


def test_legacy_size_average_and_reduce():
    x = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0, 1, 2, 1])
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            ours = crossent.cross_entropy(x, t, size_average=size_average, reduce=reduce)
        with pytest.warns(UserWarning):
            theirs = TF.cross_entropy(x, t, size_average=size_average, reduce=reduce)
        torch.testing.assert_close(ours, theirs)
    # kl_div's quirk: legacy args with reduction='batchmean' still divide by the batch size
    with pytest.warns(UserWarning):
        ours = crossent.kl_div(x, x.softmax(1), reduce=True, reduction="batchmean")
    with pytest.warns(UserWarning):
        theirs = TF.kl_div(x, x.softmax(1), reduce=True, reduction="batchmean")
    torch.testing.assert_close(ours, theirs)


def test_elementwise_mean_alias_warns():
    x = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0, 1, 2, 1])
    with pytest.warns(UserWarning, match="elementwise_mean"):
        ours = crossent.cross_entropy(x, t, reduction="elementwise_mean")
    torch.testing.assert_close(ours, TF.cross_entropy(x, t))
