"""crossent.sigmoid_focal_loss against torchvision's formula and a stable float64 composition:
values and gradients (input and target), stability at extreme logits, dtypes, compile, autocast, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from tests.helpers import check_against

GAMMAS = [0.0, 0.5, 2.0, 3.7]
ALPHAS = [0.25, -1.0]
REDUCTIONS = ["none", "mean", "sum"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def torchvision_formula(x, t, *, gamma=2.0, alpha=0.25, pos_weight=None, reduction="mean"):
    """torchvision.ops.sigmoid_focal_loss as its definition reads (plus BCE-with-logits' pos_weight)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss, reduction)


def stable_composition(x, t, *, gamma=2.0, alpha=0.25, pos_weight=None, reduction="mean"):
    """The same loss from stable pieces, differentiable in x and t: log-sigmoids and a sum of sigmoids."""
    pw = 1.0 if pos_weight is None else pos_weight
    ce = -(pw * t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    q = t * torch.sigmoid(-x) + (1 - t) * torch.sigmoid(x)
    loss = ce * q**gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss, reduction)


def naive_formula(x, t, *, gamma=2.0, alpha=0.25):
    """The textbook formula on probabilities, which overflows for large |x|."""
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma


def _inputs(shape=(6, 5), soft=False, dtype=torch.float64):
    x = torch.randn(shape, dtype=dtype) * 3
    t = torch.rand(shape, dtype=dtype) if soft else torch.randint(0, 2, shape).to(dtype)
    return x, t


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_values_and_gradients(gamma, alpha, reduction, pos_weight, soft):
    x, t = _inputs(soft=soft)
    pw = torch.rand(5, dtype=torch.float64) * 3 if pos_weight else None
    kwargs = dict(gamma=gamma, alpha=alpha, pos_weight=pw, reduction=reduction)
    # target gradients: torch's BCE-with-logits has one only in recent versions, so the stable composition
    check_against(crossent.sigmoid_focal_loss, stable_composition, (x, t), kwargs, grad_args=(0, 1))
    check_against(crossent.sigmoid_focal_loss, torchvision_formula, (x, t), kwargs, grad_args=(0,), atol=1e-10)


def test_module_matches_functional_and_keeps_pos_weight_buffer():
    pw = torch.tensor([1.0, 2.0, 3.0])
    m = crossent.nn.SigmoidFocalLoss(gamma=1.5, alpha=0.3, reduction="sum", pos_weight=pw)
    assert "pos_weight" in m.state_dict() and "gamma=1.5" in repr(m)
    x, t = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    expected = crossent.sigmoid_focal_loss(x, t, gamma=1.5, alpha=0.3, pos_weight=pw, reduction="sum")
    assert torch.equal(m(x, t), expected)
    assert crossent.nn.SigmoidFocalLoss().reduction == "mean"


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), ()])
def test_k_dim_and_scalar_shapes(shape, block_size):
    x, t = _inputs(shape, soft=True)
    pw = torch.rand(shape[-1:], dtype=torch.float64) + 0.5 if shape else None
    for reduction in REDUCTIONS:
        kwargs = dict(gamma=2.0, alpha=0.25, pos_weight=pw, reduction=reduction)
        check_against(crossent.sigmoid_focal_loss, stable_composition, (x, t), kwargs, grad_args=(0, 1))


def test_pos_weight_broadcast_over_channels():
    x, t = _inputs((2, 3, 4, 4))
    pw = torch.rand(3, 1, 1, dtype=torch.float64) + 0.5
    kwargs = dict(pos_weight=pw, reduction="none")
    check_against(crossent.sigmoid_focal_loss, stable_composition, (x, t), kwargs, grad_args=(0, 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_input(reduction):
    x = torch.empty(0, 4, requires_grad=True)
    out = crossent.sigmoid_focal_loss(x, torch.empty(0, 4), reduction=reduction)
    expected = torchvision_formula(x.detach(), torch.empty(0, 4), reduction=reduction)
    torch.testing.assert_close(out, expected, equal_nan=True)  # 'mean' of nothing is NaN, as in torch
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == (0, 4)


def test_non_contiguous_input():
    base_x, base_t = _inputs((5, 8), soft=True)
    x, t = base_x.t()[::2], base_t.t()[::2]  # (4, 5) views with strides
    assert not x.is_contiguous()
    kwargs = dict(gamma=2.0, alpha=0.25, pos_weight=torch.rand(5, dtype=torch.float64), reduction="none")
    check_against(crossent.sigmoid_focal_loss, stable_composition, (x, t), kwargs, grad_args=(0, 1))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_stay_finite(gamma, dtype):
    x = torch.tensor([1e4, -1e4, 1e4, -1e4, 1e4, -1e4], dtype=dtype)
    t = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.3, 0.9], dtype=dtype)
    xg, tg = x.clone().requires_grad_(), t.clone().requires_grad_()
    out = crossent.sigmoid_focal_loss(xg, tg, gamma=gamma, reduction="none")
    gx, gt = torch.autograd.grad(out.sum(), (xg, tg))
    assert out.isfinite().all() and gx.isfinite().all() and gt.isfinite().all()
    # float64 values from the stable composition; confident right answers cost 0, wrong ones a_t |x| q^gamma
    torch.testing.assert_close(out, stable_composition(x.double(), t.double(), gamma=gamma, reduction="none").to(dtype))
    assert out[0] == 0 and out[3] == 0 and out[2] == 0.75 * 1e4
    # d/dx for a confidently wrong answer: a_t (s - t), the focal factor being 1
    assert gx[2] == 0.75 and gx[1] == -0.25
    # the naive formula has no finite value there
    assert not naive_formula(x, t, gamma=gamma).isfinite().all()


def test_extreme_logits_where_torchvision_gradient_is_nan():
    x = torch.tensor([1e4, -1e4], requires_grad=True)
    t = torch.tensor([1.0, 0.0])
    (tv_grad,) = torch.autograd.grad(torchvision_formula(x, t, gamma=0.5, reduction="sum"), x)
    assert tv_grad.isnan().any()
    (grad,) = torch.autograd.grad(crossent.sigmoid_focal_loss(x, t, gamma=0.5, reduction="sum"), x)
    assert torch.equal(grad, torch.zeros(2))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("pos_weight", [False, True])
def test_gradcheck(gamma, pos_weight):
    x, t = _inputs((3, 4), soft=True)
    pw = torch.rand(4, dtype=torch.float64) + 0.5 if pos_weight else None
    x.requires_grad_(), t.requires_grad_()
    for alpha, reduction in ((0.25, "none"), (-1.0, "mean"), (0.6, "sum")):
        kwargs = dict(gamma=gamma, alpha=alpha, pos_weight=pw, reduction=reduction)
        assert torch.autograd.gradcheck(lambda x, t, kw=kwargs: crossent.sigmoid_focal_loss(x, t, **kw), (x, t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gamma_zero_no_alpha_is_exactly_bce_with_logits(reduction):
    x, t = _inputs((9, 7), soft=True, dtype=torch.float32)
    ours = crossent.sigmoid_focal_loss(x, t, gamma=0.0, alpha=-1.0, reduction=reduction)
    assert torch.equal(ours, crossent.binary_cross_entropy_with_logits(x, t, reduction=reduction, impl="torch"))
    torch.testing.assert_close(ours, crossent.binary_cross_entropy_with_logits(x, t, reduction=reduction))
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(x, t, reduction=reduction))
    pw = torch.rand(7) * 3
    check_against(
        lambda x, t: crossent.sigmoid_focal_loss(x, t, gamma=0.0, alpha=-1.0, pos_weight=pw, reduction=reduction),
        lambda x, t: crossent.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=reduction),
        (x, t),
        grad_args=(0, 1),
        atol=1e-6,
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    ("x_dtype", "t_dtype", "out_dtype"),
    [
        (torch.float16, torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.float64, torch.float64),
        (torch.bfloat16, torch.float32, torch.float32),
    ],
)
def test_dtypes(x_dtype, t_dtype, out_dtype):
    x = torch.randn(4, 3, dtype=x_dtype, requires_grad=True)
    t = torch.rand(4, 3, dtype=t_dtype, requires_grad=True)
    for reduction in REDUCTIONS:
        out = crossent.sigmoid_focal_loss(x, t, reduction=reduction)
        assert out.dtype == out_dtype
        gx, gt = torch.autograd.grad(out.sum(), (x, t))
        assert gx.dtype == x_dtype and gt.dtype == t_dtype


def test_bfloat16_no_worse_than_torch_composition():
    x, t = _inputs((64, 33), soft=True, dtype=torch.float32)
    x16, t16 = x.bfloat16(), t.bfloat16()
    for reduction in REDUCTIONS:
        exact = stable_composition(x16.double(), t16.double(), reduction=reduction)
        ours = crossent.sigmoid_focal_loss(x16, t16, reduction=reduction).double()
        torch_bf16 = torchvision_formula(x16, t16, reduction=reduction).double()
        assert (ours - exact).abs().max() <= (torch_bf16 - exact).abs().max()


def test_compile_fullgraph():
    pw = torch.full((5,), 2.0)

    def fn(x, t):
        return crossent.sigmoid_focal_loss(x, t, gamma=2.0, alpha=0.25, pos_weight=pw)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    check_against(compiled, fn, (torch.randn(4, 5), torch.rand(4, 5)), grad_args=(0, 1), atol=1e-6, rtol=1e-5)


def test_autocast_runs_in_float32():
    x, t = torch.randn(6, 4), torch.rand(6, 4)
    xb = x.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = crossent.sigmoid_focal_loss(x, t)
        outb = crossent.sigmoid_focal_loss(xb, t)
    assert out32.dtype == torch.float32 and torch.equal(out32, crossent.sigmoid_focal_loss(x, t))
    assert outb.dtype == torch.float32
    assert torch.equal(outb, crossent.sigmoid_focal_loss(xb.detach().float(), t))
    (grad,) = torch.autograd.grad(outb, xb)
    assert grad.dtype == torch.bfloat16


def test_double_backward_and_transforms_refused():
    x = torch.randn(3, 2, requires_grad=True)
    t = torch.rand(3, 2)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(crossent.sigmoid_focal_loss(x, t), x, create_graph=True)
    with pytest.raises(RuntimeError, match="torch.func"):
        torch.func.vmap(lambda x: crossent.sigmoid_focal_loss(x, t[0]))(x.detach())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(gamma=-0.5), ValueError, r"gamma must be a finite number >= 0, got -0\.5"),
        (dict(gamma=float("nan")), ValueError, "gamma must be a finite number >= 0, got nan"),
        (dict(alpha=1.5), ValueError, r"alpha must be a number in \[0, 1\].*got 1\.5"),
        (dict(reduction="batchmean"), ValueError, "Invalid Value for arg 'reduction': 'batchmean'"),
        (dict(target=torch.rand(3, 5)), ValueError, r"Target size \(torch.Size\(\[3, 5\]\)\) must be the same"),
        (dict(input=torch.ones(3, 4, dtype=torch.long)), TypeError, "'input' must be a floating-point tensor.*Long"),
        (dict(target=torch.ones(3, 4, dtype=torch.long)), TypeError, "'target' must be a floating-point tensor"),
        (dict(pos_weight=torch.ones(3)), ValueError, r"pos_weight of shape \[3\] does not broadcast.*\[3, 4\]"),
        (dict(pos_weight=torch.ones(4, requires_grad=True)), RuntimeError, "not differentiable.*pos_weight"),
        (dict(input=[1.0]), TypeError, "argument 'input' .* must be Tensor, not list"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(input=torch.randn(3, 4), target=torch.rand(3, 4))
    call = {**args, **kwargs}
    with pytest.raises(error, match=match):
        crossent.sigmoid_focal_loss(call.pop("input"), call.pop("target"), **call)
