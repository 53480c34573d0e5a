"""The softmax focal loss and poly-1 cross-entropy against plain float64 torch compositions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import crossent
from helpers import assert_close

F64 = torch.float64


def composed(x, target, gamma=0.0, epsilon=0.0, alpha=None, weight=None, ignore_index=-100, reduction="mean",
             label_smoothing=0.0):  # fmt: skip
    """``sum_c alpha_c w_c q_c f(log p_c)``, ``f(log p) = -(1 - p)^gamma log p + epsilon (1 - p)``, from
    torch's own ops, ``q`` the (smoothed) target distribution; class indices' 'mean' divides by
    ``sum_n m_n w[y_n]`` (without alpha), probabilities' by the number of positions."""
    classes = x.shape[1]
    log_p = x.log_softmax(1)
    p = log_p.exp()
    f = -((1 - p) ** gamma) * log_p + epsilon * (1 - p)
    probability = target.shape == x.shape
    if probability:
        kept, q = None, target
    else:
        kept = target != ignore_index
        safe = torch.where(kept, target, 0)
        q = F.one_hot(safe, classes).movedim(-1, 1).to(x.dtype)
    q = q * (1 - label_smoothing) + label_smoothing / classes
    factors = torch.ones(classes, dtype=x.dtype) if weight is None else weight
    if alpha is not None:
        factors = factors * (alpha if isinstance(alpha, torch.Tensor) else torch.full((classes,), alpha, dtype=x.dtype))
    per_class = factors.view(1, -1, *([1] * (x.dim() - 2)))
    loss = (per_class * q * f).sum(1)
    if kept is not None:
        loss = torch.where(kept, loss, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if probability:
        return loss.sum() / loss.numel()
    return loss.sum() / ((weight[safe] if weight is not None else 1.0) * kept).sum()


def composed_focal(x, target, gamma, **kwargs):
    return composed(x, target, gamma=gamma, **kwargs)


def composed_poly1(x, target, epsilon, **kwargs):
    return composed(x, target, epsilon=epsilon, **kwargs)


def naive_focal(x, target, gamma):
    """Without weights and smoothing, the textbook form: ``(1 - p_t)^gamma`` times torch's cross-entropy."""
    ce = F.cross_entropy(x, target, reduction="none")
    p_t = x.softmax(1).gather(1, target.unsqueeze(1)).squeeze(1)
    return ((1 - p_t) ** gamma * ce).mean()


def case(kind: str, shape=(7, 5)):
    x = torch.randn(shape, dtype=F64) * 2
    positions = (shape[0], *shape[2:])
    target = torch.randint(0, shape[1], positions)
    extra = {}
    if kind in ("weighted", "ignored", "smoothed"):
        extra["weight"] = torch.rand(shape[1], dtype=F64) + 0.5
    if kind in ("ignored", "smoothed"):
        target.view(-1)[::3] = -100
    if kind in ("smoothed", "probability"):
        extra["label_smoothing"] = 0.15
    if kind == "probability":
        target = torch.rand(shape, dtype=F64).softmax(1)
        extra["weight"] = torch.rand(shape[1], dtype=F64) + 0.5
    return x, target, extra


def compare(ours, theirs, x):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(x1), theirs(x2)
    assert_close(a, b, "value", 1e-12, 1e-10)
    g = torch.randn_like(b)
    (ga,) = torch.autograd.grad((a * g).sum(), x1)
    (gb,) = torch.autograd.grad((b * g).sum(), x2)
    assert_close(ga, gb, "gradient", 1e-12, 1e-10)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25, "per-class"])
@pytest.mark.parametrize("kind", ["index", "weighted", "ignored", "smoothed", "probability"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 2, 2)], ids=str)
def test_focal_loss(gamma, alpha, kind, reduction, shape, block_size):
    x, target, extra = case(kind, shape)
    if alpha == "per-class":
        alpha = torch.rand(shape[1], dtype=F64)
    kwargs = {"gamma": gamma, "alpha": alpha, "reduction": reduction, **extra}
    compare(lambda x: crossent.focal_loss(x, target, **kwargs), lambda x: composed_focal(x, target, **kwargs), x)


@pytest.mark.parametrize("epsilon", [-1.0, 0.5, 2.0])
@pytest.mark.parametrize("kind", ["index", "weighted", "ignored", "smoothed", "probability"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 2, 2)], ids=str)
def test_poly1_cross_entropy(epsilon, kind, reduction, shape, block_size):
    x, target, extra = case(kind, shape)
    kwargs = {"epsilon": epsilon, "reduction": reduction, **extra}
    compare(
        lambda x: crossent.poly1_cross_entropy(x, target, **kwargs), lambda x: composed_poly1(x, target, **kwargs), x
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_limits_are_the_plain_loss_exactly(reduction):
    for kind in ("smoothed", "probability"):
        x, target, extra = case(kind)
        plain = crossent.cross_entropy(x, target, reduction=reduction, **extra)
        assert torch.equal(crossent.focal_loss(x, target, gamma=0.0, reduction=reduction, **extra), plain)
        assert torch.equal(crossent.poly1_cross_entropy(x, target, epsilon=0.0, reduction=reduction, **extra), plain)


def test_confident_predictions_stay_finite():
    """At logits of 1e4 the naive composition gives NaN gradients for gamma < 1; here all stays finite,
    and ``1 - p_t`` keeps the precision the log-sum-exp has (``-expm1(log p_t)``, never ``1 - p_t``)."""
    x = torch.tensor([[1e4, 0.0, -1e4], [20.0, 0.0, 0.0], [-1e4, 1e4, 0.0]], dtype=F64, requires_grad=True)
    target = torch.tensor([0, 0, 0])
    loss = crossent.focal_loss(x, target, gamma=0.5, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    rest = 2 * torch.exp(torch.tensor(-20.0, dtype=F64)) / (1 + 2 * torch.exp(torch.tensor(-20.0, dtype=F64)))
    torch.testing.assert_close(loss[1], rest.sqrt() * -torch.log1p(-rest), rtol=1e-6, atol=0)
    for smoothing in (0.1, None):  # class indices with label smoothing, and probability targets
        xs = x.detach().clone().requires_grad_()
        soft = F.one_hot(target, 3).to(F64) * 0.9 + 0.1 / 3
        if smoothing is None:
            loss = crossent.focal_loss(xs, soft, gamma=0.5, reduction="none")
        else:
            loss = crossent.focal_loss(xs, target, gamma=0.5, label_smoothing=smoothing, reduction="none")
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(xs.grad).all()
    naive = x.detach().clone().requires_grad_()
    p_t = naive.softmax(1)[:, 0]
    ((1 - p_t) ** 0.5 * -naive.log_softmax(1)[:, 0]).sum().backward()
    assert naive.grad.isnan().any()


@pytest.mark.parametrize("loss", ["focal", "poly1"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets_and_class_weights_get_their_gradients(loss, reduction, block_size):
    x, target, extra = case("probability", (6, 5, 3))
    t1, w1 = target.clone().requires_grad_(), extra["weight"].clone().requires_grad_()
    t2, w2 = target.clone().requires_grad_(), extra["weight"].clone().requires_grad_()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    options = {"gamma": 1.5} if loss == "focal" else {"epsilon": 0.7}
    ours = (crossent.focal_loss if loss == "focal" else crossent.poly1_cross_entropy)(
        x1, t1, weight=w1, reduction=reduction, label_smoothing=0.1, **options
    )
    theirs = composed(x2, t2, weight=w2, reduction=reduction, label_smoothing=0.1, **options)
    assert_close(ours, theirs, "value", 1e-12, 1e-10)
    g = torch.randn_like(theirs)
    for a, b, name in zip(
        torch.autograd.grad((ours * g).sum(), (x1, t1, w1)),
        torch.autograd.grad((theirs * g).sum(), (x2, t2, w2)),
        ("input", "target", "weight"),
        strict=True,
    ):
        assert_close(a, b, f"gradient of {name}", 1e-12, 1e-10)


def test_textbook_form_and_the_poly_paper_with_label_smoothing():
    """Without weights or smoothing the focal loss is ``(1 - p_t)^gamma`` times cross-entropy; with label
    smoothing, poly-1 is the paper's ``CE(q) + epsilon (1 - sum_c q_c p_c)``."""
    x = torch.randn(9, 4, dtype=F64) * 3
    target = torch.randint(0, 4, (9,))
    assert_close(crossent.focal_loss(x, target, gamma=2.0), naive_focal(x, target, 2.0), "focal", 1e-12, 1e-12)
    q = F.one_hot(target, 4).to(F64) * 0.8 + 0.2 / 4
    paper = F.cross_entropy(x, q, reduction="none") + 0.5 * (1 - (q * x.softmax(1)).sum(1))
    ours = crossent.poly1_cross_entropy(x, target, epsilon=0.5, label_smoothing=0.2, reduction="none")
    assert_close(ours, paper, "poly-1 with label smoothing", 1e-12, 1e-12)


def test_gradcheck():
    x = torch.randn(4, 6, dtype=F64, requires_grad=True)
    target = torch.tensor([0, 5, -100, 2])
    w = torch.rand(6, dtype=F64) + 0.5
    assert torch.autograd.gradcheck(lambda x: crossent.focal_loss(x, target, gamma=1.7, alpha=0.3, weight=w), (x,))
    assert torch.autograd.gradcheck(lambda x: crossent.poly1_cross_entropy(x, target, epsilon=0.7, weight=w), (x,))


def test_fused_linear_loss_gets_the_same_focal_loss():
    h = torch.randn(9, 4, dtype=F64, requires_grad=True)
    w = torch.randn(6, 4, dtype=F64, requires_grad=True)
    target = torch.tensor([0, 5, -100, 2, 2, 1, 0, 3, 4])
    fused = crossent.linear_cross_entropy(h, w, target, focal_gamma=2.0, chunk_size=4)
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    expected = composed_focal(h2 @ w2.t(), target, 2.0)
    assert_close(fused, expected, "fused value", 1e-12, 1e-10)
    fused.backward()
    expected.backward()
    assert_close(h.grad, h2.grad, "gradient of h", 1e-12, 1e-10)
    assert_close(w.grad, w2.grad, "gradient of W", 1e-12, 1e-10)


@pytest.mark.parametrize("targets", ["smoothed", "probability"])
def test_fused_linear_loss_sums_the_focal_terms_class_by_class(targets):
    h = torch.randn(9, 4, dtype=F64, requires_grad=True)
    w = torch.randn(6, 4, dtype=F64, requires_grad=True)
    if targets == "probability":
        target, smoothing = torch.rand(9, 6, dtype=F64).softmax(1), 0.0
    else:
        target, smoothing = torch.tensor([0, 5, -100, 2, 2, 1, 0, 3, 4]), 0.2
    fused = crossent.linear_cross_entropy(
        h, w, target, focal_gamma=2.0, label_smoothing=smoothing, chunk_size=4, reduction="sum"
    )
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    expected = composed_focal(h2 @ w2.t(), target, 2.0, label_smoothing=smoothing, reduction="sum")
    assert_close(fused, expected, "fused value", 1e-12, 1e-10)
    fused.backward()
    expected.backward()
    assert_close(h.grad, h2.grad, "gradient of h", 1e-12, 1e-10)
    assert_close(w.grad, w2.grad, "gradient of W", 1e-12, 1e-10)


def test_float32_compile_and_modules():
    x = torch.randn(8, 10, requires_grad=True)
    target = torch.randint(0, 10, (8,))
    eager = crossent.focal_loss(x, target, gamma=2.0)
    compiled = torch.compile(lambda x: crossent.focal_loss(x, target, gamma=2.0), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), eager)
    module = crossent.nn.FocalLoss(gamma=2.0, alpha=torch.full((10,), 0.5))
    torch.testing.assert_close(module(x, target), 0.5 * eager)
    poly = crossent.nn.Poly1CrossEntropyLoss(epsilon=1.0, reduction="sum")
    torch.testing.assert_close(poly(x, target), crossent.poly1_cross_entropy(x, target, reduction="sum"))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda x, t: crossent.focal_loss(x, t, gamma=-1.0), ValueError, "gamma must be a finite number >= 0"),
        (lambda x, t: crossent.focal_loss(x, t, alpha=torch.ones(3)), ValueError, r"one value per class \(5\)"),
        (lambda x, t: crossent.focal_loss(x, t, alpha=-0.5), ValueError, "alpha must be a finite number >= 0"),
        (lambda x, t: crossent.poly1_cross_entropy(x, t, epsilon=-2.0), ValueError, "epsilon must be a finite"),
        (
            lambda x, t: crossent.focal_loss(x, t + 4, alpha=0.5, weight=torch.ones(5)),
            IndexError,
            "Target 5 is out of bounds",
        ),
        (lambda x, t: crossent.focal_loss(x, t, reduction="avg"), ValueError, "avg is not a valid value"),
    ],
)
def test_bad_values_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 6),
    classes=st.integers(1, 7),
    inner=st.sampled_from([(), (3,), (2, 2)]),
    gamma=st.sampled_from([0.0, 0.25, 1.0, 2.0, 4.5]),
    epsilon=st.sampled_from([0.0, -1.0, 0.5]),
    smoothing=st.sampled_from([0.0, 0.3]),
    targets=st.sampled_from(["indices", "some-ignored", "all-ignored", "probabilities"]),
    weighted=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    scale=st.sampled_from([1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_property_against_the_composition(
    rows, classes, inner, gamma, epsilon, smoothing, targets, weighted, reduction, scale, seed
):
    # (1 - p)^gamma with gamma < 1 has an infinite slope at p = 1, where the composition's gradient is NaN
    # (ours is the limit, 0: see test_confident_predictions_stay_finite)
    assume(gamma == 0.0 or gamma >= 1.0 or (classes > 1 and scale == 1.0))
    g = torch.Generator().manual_seed(seed)
    shape = (rows, classes, *inner)
    x = torch.randn(shape, dtype=F64, generator=g) * scale
    positions = (rows, *inner)
    if targets == "probabilities":
        target = torch.rand(shape, dtype=F64, generator=g).softmax(1)
    else:
        target = torch.randint(0, classes, positions, generator=g)
        if targets != "indices":
            target.view(-1)[:: 1 if targets == "all-ignored" else 2] = -100
    weight = torch.rand(classes, dtype=F64, generator=g) + 0.25 if weighted else None
    kwargs = {"weight": weight, "reduction": reduction, "label_smoothing": smoothing}
    compare(
        lambda x: crossent.cross_entropy(x, target, _modulation=(gamma, epsilon), **kwargs),
        lambda x: composed(x, target, gamma=gamma, epsilon=epsilon, **kwargs),
        x,
    )
