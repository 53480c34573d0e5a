"""cross_entropy on the native kernels (``impl="native"``) against torch.nn.functional in float64:
every option, odd sizes, extreme logits, and every way of asking for the gradient."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch
from crossent.native import kernels
from tests.helpers import check_against
from tests.native.native_env import in_float64, needs_native

pytestmark = needs_native

ATOL, RTOL = 2e-6, 2e-5
native_ce = functools.partial(crossent.cross_entropy, impl="native")
torch_ce64 = in_float64(F.cross_entropy)

# (logits shape, class-index target shape): (C,) and (N, C), odd class and row counts
SHAPES = [
    ((1,), ()),
    ((3,), ()),
    ((17,), ()),
    ((0, 3), (0,)),
    ((1, 1), (1,)),
    ((1, 17), (1,)),
    ((5, 3), (5,)),
    ((5, 1000), (5,)),
    ((67, 17), (67,)),
    ((67, 1), (67,)),
]
# (N, C, 1, ..): rows of the native kernels too (trailing dims of size 1)
TRAILING = [((5, 17, 1), (5, 1)), ((67, 3, 1), (67, 1)), ((4, 9, 1, 1), (4, 1, 1))]


def _classes(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) == 1 else shape[1]


def _index_targets(shape, target_shape, pattern: str, ignore_index: int = -100) -> torch.Tensor:
    c = _classes(shape)
    t = torch.randint(0, c, target_shape)
    flat = t.view(-1)
    if pattern == "some":
        flat[::3] = ignore_index
    elif pattern == "all":
        flat[:] = ignore_index
    return t


def _weight(c: int, given: bool) -> torch.Tensor | None:
    return torch.rand(c) + 0.25 if given else None


def _assert_native(x: torch.Tensor, **options) -> None:
    spec = _dispatch.spec_of(
        x, inner=math.prod(x.shape[2:]), classes=_classes(tuple(x.shape)), **options
    )  # what cross_entropy asks the dispatcher
    assert _dispatch.resolve("cross_entropy", "auto", x.device, spec) == "native"


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("pattern", ["none", "some", "all"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_class_indices_match_float64(reduction, pattern, smoothing, weighted):
    for shape, target_shape in SHAPES:
        x = torch.randn(shape) * 3
        t = _index_targets(shape, target_shape, pattern)
        w = _weight(_classes(shape), weighted)
        kwargs = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
        _assert_native(x, weight=weighted, label_smoothing=smoothing, reduction=reduction)
        check_against(native_ce, torch_ce64, (x, t), kwargs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_an_ignore_index_that_is_a_class(reduction, smoothing):
    x = torch.randn(40, 6)
    t = torch.randint(0, 6, (40,))  # about a sixth are class 1: ignored
    kwargs = dict(weight=torch.rand(6), ignore_index=1, reduction=reduction, label_smoothing=smoothing)
    check_against(native_ce, torch_ce64, (x, t), kwargs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_probabilities_match_float64(reduction, smoothing, weighted):
    for shape, _ in SHAPES:
        x = torch.randn(shape) * 3
        p = torch.rand(shape)  # not normalised: the mass B of each row enters the loss
        w = _weight(_classes(shape), weighted)
        kwargs = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
        _assert_native(x, probability=True, weight=weighted, label_smoothing=smoothing, reduction=reduction)
        check_against(native_ce, torch_ce64, (x, p), kwargs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_trailing_size_one_dims_match_float64(reduction, probability):
    for shape, target_shape in TRAILING:
        x = torch.randn(shape) * 3
        t = torch.rand(shape) if probability else _index_targets(shape, target_shape, "some")
        kwargs = dict(weight=torch.rand(shape[1]), reduction=reduction, label_smoothing=0.1)
        _assert_native(x, probability=probability, weight=True, label_smoothing=0.1, reduction=reduction)
        check_against(native_ce, torch_ce64, (x, t), kwargs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_trailing_size_one_dims_without_the_precomputed_gradient(reduction, probability):
    """The forward alone, the in-place backward and a retained graph's second backward (which
    recompute the gradient) work for (N, C, 1, ..) logits."""
    for shape, target_shape in TRAILING:
        x = torch.randn(shape) * 3
        t = torch.rand(shape) if probability else _index_targets(shape, target_shape, "some")
        kwargs = dict(weight=torch.rand(shape[1]), reduction=reduction, label_smoothing=0.1)
        expected = torch_ce64(x, t, **kwargs)
        torch.testing.assert_close(native_ce(x, t, **kwargs), expected, atol=ATOL, rtol=RTOL)
        h = x.clone().requires_grad_()
        g = torch.rand_like(expected)
        native_ce(h * 1.0, t, inplace_backward=True, **kwargs).backward(g)
        x64 = x.double().requires_grad_()
        F.cross_entropy(
            x64, t.double() if probability else t, **{**kwargs, "weight": kwargs["weight"].double()}
        ).backward(g)
        torch.testing.assert_close(h.grad, x64.grad.float(), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_many_classes(reduction, probability):
    x = torch.randn(64, 4099) * 4
    t = torch.rand(64, 4099).softmax(1) if probability else _index_targets((64, 4099), (64,), "some")
    kwargs = dict(weight=torch.rand(4099), reduction=reduction, label_smoothing=0.1)
    check_against(native_ce, torch_ce64, (x, t), kwargs, atol=ATOL, rtol=RTOL)


def _extreme_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of large, infinite and NaN logits (class 2 is each row's target)."""
    inf, nan = math.inf, math.nan
    x = torch.randn(12, 5)
    x[0] = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4])
    x[1] = torch.tensor([-1e4, -1e4, 1e4, -1e4, -1e4])
    x[2] = torch.tensor([1e4, 1e4, 1e4, 1e4, 1e4])
    x[3, 0] = inf  # +inf elsewhere than the target
    x[4, 2] = inf  # +inf at the target
    x[5, 1] = -inf  # -inf elsewhere
    x[6, 2] = -inf  # -inf at the target
    x[7, 3] = nan
    x[8] = -inf  # all -inf
    x[9] = torch.tensor([-inf, -inf, 0.0, -inf, -inf])
    x[10] = torch.tensor([-3e38, -3e38, -3e38, -3e38, -3e38])
    x[11] = torch.tensor([math.nan, -inf, 0.0, inf, 1e4])
    return x, torch.full((12,), 2)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_extreme_logits_with_class_indices(reduction, smoothing, weighted):
    x, t = _extreme_logits()
    kwargs = dict(weight=_weight(5, weighted), reduction=reduction, label_smoothing=smoothing)
    for rows in [slice(None), *[slice(i, i + 1) for i in range(12)]]:
        check_against(native_ce, torch_ce64, (x[rows], t[rows]), kwargs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_extreme_logits_with_probabilities(reduction, smoothing):
    x, _ = _extreme_logits()
    p = torch.rand(12, 5)
    p[5, 1] = 0.0  # a -inf logit without target mass: 0 * -inf = NaN, as in torch
    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
    for rows in [slice(None), *[slice(i, i + 1) for i in range(12)]]:
        check_against(native_ce, torch_ce64, (x[rows], p[rows]), kwargs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("row", ["nan", "plus-inf", "all-minus-inf"])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_ignored_rows_with_non_finite_logits(row, reduction):
    x = torch.randn(3, 4)
    x[1] = {"nan": torch.tensor([math.nan, 1.0, 2.0, 3.0]), "plus-inf": torch.tensor([math.inf, 1.0, 2.0, 3.0]),
            "all-minus-inf": torch.full((4,), -math.inf)}[row]  # fmt: skip
    t = torch.tensor([0, -100, 3])
    check_against(native_ce, torch_ce64, (x, t), dict(reduction=reduction), atol=ATOL, rtol=RTOL)


# ---- every way of asking for the gradient --------------------------------------------------------


def _reference_grad(x, t, upstream, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    x64 = x.detach().double().requires_grad_()
    kwargs = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    loss = F.cross_entropy(x64, t.double() if t.is_floating_point() else t, **kwargs)
    loss.backward(upstream.double())
    return loss.detach().float(), x64.grad.float()


def _upstream(reduction: str, n: int) -> torch.Tensor:
    return torch.rand(n) + 0.5 if reduction == "none" else torch.tensor(2.5)


CASES = [
    pytest.param(dict(reduction="mean"), False, id="mean"),
    pytest.param(dict(reduction="sum", label_smoothing=0.2), False, id="sum-smoothed"),
    pytest.param(dict(reduction="none"), False, id="none"),
    pytest.param(dict(reduction="mean", label_smoothing=0.1, weight=torch.rand(33) + 0.1), False, id="mean-all"),
    pytest.param(dict(reduction="mean", label_smoothing=0.1), True, id="probabilities-mean"),
    pytest.param(dict(reduction="none", weight=torch.rand(33)), True, id="probabilities-none"),
]


def _inputs(probability: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(21, 33) * 2
    t = torch.rand(21, 33) if probability else _index_targets((21, 33), (21,), "some")
    return x, t


# half-precision class weights are read after they are freed (see test_low_precision.py): left out here
INPLACE_CASES = [
    pytest.param(*case.values, dtype, id=f"{case.id}-{str(dtype).removeprefix('torch.')}")
    for case in CASES
    for dtype in (torch.float32, torch.bfloat16, torch.float16)
    if dtype == torch.float32 or "weight" not in case.values[0]
]


@pytest.mark.parametrize("kwargs, probability, dtype", INPLACE_CASES)
def test_inplace_backward_on_a_non_leaf(kwargs, probability, dtype):
    x, t = _inputs(probability)
    h = x.to(dtype).requires_grad_()
    logits = h * 1.0
    t = t.to(dtype) if probability else t
    g = _upstream(kwargs["reduction"], 21)
    w = kwargs.get("weight")
    options = {**kwargs, "weight": w.to(dtype) if w is not None else None}
    loss = native_ce(logits, t, inplace_backward=True, **options)
    loss.backward(g.to(dtype))
    _, expected = _reference_grad(h, t, g, **kwargs)
    assert h.grad.dtype == dtype
    tol = dict(atol=ATOL, rtol=RTOL) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(h.grad.float(), expected, **tol)
    # the gradient was written over the logits (d(h * 1)/dh passes it on unchanged)
    assert torch.equal(logits.detach(), h.grad)


@pytest.mark.parametrize("kwargs, probability", CASES)
def test_retained_graph_second_backward_matches_the_first(kwargs, probability):
    x, t = _inputs(probability)
    x.requires_grad_()
    g = _upstream(kwargs["reduction"], 21)
    loss = native_ce(x, t, **kwargs)
    (first,) = torch.autograd.grad(loss, x, g, retain_graph=True)
    kept = first.clone()
    (second,) = torch.autograd.grad(loss, x, g, retain_graph=True)
    (third,) = torch.autograd.grad(loss, x, g)
    torch.testing.assert_close(second, first, atol=1e-7, rtol=1e-6)
    assert torch.equal(third, second)
    assert torch.equal(first, kept), "a later backward changed the gradient handed out by the first"
    expected_loss, expected = _reference_grad(x, t, g, **kwargs)
    torch.testing.assert_close(loss.detach(), expected_loss, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(first, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kwargs, probability", CASES)
def test_gradients_accumulate_over_a_retained_graph(kwargs, probability):
    x, t = _inputs(probability)
    x.requires_grad_()
    g = _upstream(kwargs["reduction"], 21)
    loss = native_ce(x, t, **kwargs)
    loss.backward(g, retain_graph=True)
    loss.backward(g, retain_graph=True)
    loss.backward(g)
    _, expected = _reference_grad(x, t, g, **kwargs)
    torch.testing.assert_close(x.grad, 3 * expected, atol=3 * ATOL, rtol=RTOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_an_upstream_gradient_other_than_one(reduction, probability):
    x, t = _inputs(probability)
    x.requires_grad_()
    loss = native_ce(x, t, reduction=reduction, label_smoothing=0.05)
    loss.backward(torch.tensor(2.5))
    expected_loss, expected = _reference_grad(x, t, torch.tensor(2.5), reduction=reduction, label_smoothing=0.05)
    torch.testing.assert_close(loss.detach(), expected_loss, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(x.grad, expected, atol=ATOL, rtol=RTOL)


def test_the_forward_without_a_gradient():
    x, t = _inputs(False)
    expected = torch_ce64(x, t, reduction="none")
    x.requires_grad_()
    with torch.no_grad():
        out = native_ce(x, t, reduction="none")
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
    with torch.inference_mode():
        torch.testing.assert_close(native_ce(x, t, reduction="none"), expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(native_ce(x.detach(), t, reduction="none"), expected, atol=ATOL, rtol=RTOL)


def test_non_contiguous_logits():
    x = torch.randn(33, 21).t()  # (21, 33) with strides (1, 21)
    t = _index_targets((21, 33), (21,), "some")
    check_against(native_ce, torch_ce64, (x, t), dict(label_smoothing=0.1), atol=ATOL, rtol=RTOL)
    p = torch.rand(33, 21).t()
    check_against(native_ce, torch_ce64, (x, p), dict(reduction="none"), atol=ATOL, rtol=RTOL)


def test_auto_runs_the_native_kernel(monkeypatch):
    calls = []
    eager = kernels.cross_entropy_rows.eager

    def spy(*args):
        calls.append(args[0].shape)
        return eager(*args)

    monkeypatch.setattr(kernels.cross_entropy_rows, "eager", spy)
    x, t = _inputs(False)
    crossent.cross_entropy(x, t)
    crossent.cross_entropy(x.double(), t)  # float64: the PyTorch path
    crossent.cross_entropy(x.view(21, 33, 1).expand(21, 33, 2), t.view(21, 1).expand(21, 2))  # spatial
    crossent.cross_entropy(x, t, impl="torch")
    assert calls == [torch.Size([21, 33])]


@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_a_non_contiguous_class_weight(probability):
    x = torch.randn(12, 6)
    t = torch.rand(12, 6) if probability else torch.arange(12) % 6
    w = (torch.rand(12) + 0.5)[::2]
    assert not w.is_contiguous()
    check_against(native_ce, torch_ce64, (x, t), dict(weight=w, reduction="none"), atol=ATOL, rtol=RTOL)


def test_uint8_class_indices():
    x = torch.randn(9, 7)
    t = torch.randint(0, 7, (9,))
    check_against(native_ce, torch_ce64, (x, t.to(torch.uint8)), dict(reduction="none"), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(native_ce(x, t.to(torch.uint8)), native_ce(x, t))


@pytest.mark.parametrize("normalizer", [7.0, torch.tensor(7.0)], ids=["number", "tensor"])
@pytest.mark.parametrize("probability", [False, True], ids=["indices", "probabilities"])
def test_a_normalizer(normalizer, probability):
    x, t = _inputs(probability)
    oracle = in_float64(lambda x, t: F.cross_entropy(x, t, reduction="sum", label_smoothing=0.1) / 7.0)
    ours = lambda x, t: native_ce(x, t, label_smoothing=0.1, normalizer=normalizer)  # noqa: E731
    check_against(ours, oracle, (x, t), atol=ATOL, rtol=RTOL)
