"""Language-model options of ``crossent.cross_entropy``: softcap, temperature, z-loss and ``return_stats``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crossent
from crossent import _dispatch
from helpers import assert_close
from lm_reference import reference, transformed

OPTIONS = [
    {"softcap": 3.0},
    {"temperature": 0.7},
    {"z_loss": 0.1},
    {"softcap": 2.0, "temperature": 1.5, "z_loss": 0.05},
]
TARGETS = ["index", "weighted", "ignored", "all-ignored", "smoothed", "probability"]
SHAPES = [(6, 5), (3, 5, 2, 2), (5,)]


def make(shape: tuple[int, ...], kind: str, dtype: torch.dtype = torch.float64) -> dict[str, object]:
    """Logits of ``shape`` and the targets and options of ``kind``."""
    x = torch.randn(shape, dtype=dtype) * 3
    c = shape[0] if len(shape) == 1 else shape[1]
    positions = () if len(shape) == 1 else (shape[0], *shape[2:])
    call: dict[str, object] = {"input": x}
    if kind == "probability":
        call["target"] = torch.rand(shape, dtype=dtype).softmax(0 if len(shape) == 1 else 1)
        return call
    target = torch.randint(0, c, positions)
    if kind == "ignored":
        target.view(-1)[::2] = -100
    if kind == "all-ignored":
        target.fill_(-100)
    call["target"] = target
    if kind in ("weighted", "ignored", "smoothed"):
        call["weight"] = torch.rand(c, dtype=dtype) + 0.5
    if kind == "smoothed":
        call["label_smoothing"] = 0.2
    return call


def oracle_args(call: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in call.items() if k not in ("input", "target")}


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_statistics_and_every_gradient(
    options: dict[str, float], kind: str, reduction: str, shape: tuple[int, ...], block_size: str
) -> None:
    call = make(shape, kind)
    x = call.pop("input").requires_grad_()  # type: ignore[attr-defined]
    target = call.pop("target")
    x_ref = x.detach().clone().requires_grad_()
    loss, stats = crossent.cross_entropy(x, target, reduction=reduction, return_stats=True, **call, **options)
    ref = reference(x_ref, target, reduction=reduction, **call, **options)  # type: ignore[arg-type]
    for name in ("loss", "lse", "entropy", "z_loss"):
        actual = loss if name == "loss" else getattr(stats, name)
        assert_close(actual, getattr(ref, name), name, atol=1e-12, rtol=1e-10)
    if kind == "probability":
        assert stats.accuracy is None
    else:
        assert_close(stats.accuracy, ref.accuracy, "accuracy", 0, 0)
    assert not stats.z_loss.requires_grad and not stats.accuracy.requires_grad if stats.accuracy is not None else True
    upstream = [torch.randn_like(t) for t in (ref.loss, ref.lse, ref.entropy)]
    ours = sum((g * t).sum() for g, t in zip(upstream, (loss, stats.lse, stats.entropy), strict=True))
    theirs = sum((g * t).sum() for g, t in zip(upstream, ref[:3], strict=True))
    (grad,) = torch.autograd.grad(ours, x)
    (expected,) = torch.autograd.grad(theirs, x_ref)
    assert_close(grad, expected, "gradient", atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["weighted", "probability"])
def test_the_loss_alone_uses_the_forwards_gradient_and_the_statistics_their_own(kind: str) -> None:
    """The forward forms the loss's gradient; a gradient through ``lse`` or the entropy forms it anew."""
    call = make((4, 6), kind)
    x = call.pop("input").requires_grad_()  # type: ignore[attr-defined]
    target = call.pop("target")
    options = {"softcap": 4.0, "z_loss": 0.2}
    for use in ("loss", "lse", "entropy", "loss+entropy"):
        x.grad = None
        loss, stats = crossent.cross_entropy(x, target, return_stats=True, **call, **options)
        picked = {"loss": loss, "lse": stats.lse.sum(), "entropy": stats.entropy.sum()}
        sum(picked[p] for p in use.split("+")).backward()
        x_ref = x.detach().clone().requires_grad_()
        ref = reference(x_ref, target, **call, **options)  # type: ignore[arg-type]
        expected = {"loss": ref.loss, "lse": ref.lse.sum(), "entropy": ref.entropy.sum()}
        sum(expected[p] for p in use.split("+")).backward()
        assert_close(x.grad, x_ref.grad, use, atol=1e-12, rtol=1e-10)


def test_retained_graph_backward_twice() -> None:
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 5, -100, 2])
    loss, stats = crossent.cross_entropy(x, target, softcap=3.0, z_loss=0.1, return_stats=True)
    total = loss + 0.01 * stats.entropy.sum()
    (first,) = torch.autograd.grad(total, x, retain_graph=True)
    (second,) = torch.autograd.grad(total, x)
    assert_close(first, second, "second backward", 0, 0)


def test_gradcheck_with_every_option() -> None:
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0, 4], [-100, 2], [1, 1]])
    weight = torch.rand(5, dtype=torch.float64) + 0.5

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss, stats = crossent.cross_entropy(
            x, target, weight, label_smoothing=0.1, softcap=2.5, temperature=0.8, z_loss=0.3, return_stats=True
        )
        return loss, stats.lse, stats.entropy

    assert torch.autograd.gradcheck(fn, (x,))


def test_plain_options_are_the_plain_loss() -> None:
    """Defaults leave torch's behaviour untouched, bit for bit."""
    x = torch.randn(8, 11)
    target = torch.randint(0, 11, (8,))
    plain = crossent.cross_entropy(x, target, reduction="none")
    same = crossent.cross_entropy(x, target, reduction="none", softcap=None, temperature=1.0, z_loss=0.0)
    assert torch.equal(plain, same)
    loss, stats = crossent.cross_entropy(x, target, reduction="none", return_stats=True)
    torch.testing.assert_close(loss, plain)
    assert torch.equal(stats.z_loss, torch.zeros(8))


def test_accuracy_takes_the_first_of_tied_maxima() -> None:
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0], [0.0, 0.0, 5.0], [1.0, 1.0, 1.0]])
    _, stats = crossent.cross_entropy(x, torch.tensor([2, 0, 2, 1]), return_stats=True)
    assert stats.accuracy.item() == 0.5  # rows 1 and 2: argmax ties go to the lower class


def test_extreme_logits_stay_finite() -> None:
    x = torch.tensor([[1e4, -1e4, 0.0], [-math.inf, 0.0, 1.0], [-1e4, -1e4, 1e4]], dtype=torch.float64)
    x.requires_grad_()
    loss, stats = crossent.cross_entropy(x, torch.tensor([0, 2, 1]), z_loss=1e-4, return_stats=True)
    (loss + stats.entropy.sum()).backward()
    for t in (loss, stats.lse, stats.entropy, x.grad):
        assert torch.isfinite(t).all()
    assert stats.entropy[1] > 0  # a -inf logit has no mass: 0 log 0 = 0, not NaN
    capped, _ = crossent.cross_entropy(x.detach(), torch.tensor([0, 2, 1]), softcap=30.0, return_stats=True)
    assert torch.isfinite(capped)


def test_empty_batch() -> None:
    x = torch.zeros(0, 4, requires_grad=True)
    loss, stats = crossent.cross_entropy(x, torch.zeros(0, dtype=torch.long), z_loss=0.1, return_stats=True)
    assert loss.isnan() and stats.lse.shape == (0,) and stats.accuracy.isnan()
    loss.backward()
    assert x.grad.shape == (0, 4)


def test_non_contiguous_and_views() -> None:
    base = torch.randn(6, 10, dtype=torch.float64)
    x = base[:, ::2].t().contiguous().t()  # (6, 5) with strides (1, 6)
    target = torch.randint(0, 5, (6,))
    loss, stats = crossent.cross_entropy(x, target, softcap=2.0, return_stats=True)
    ref = reference(x, target, softcap=2.0)
    assert_close(loss, ref.loss, "loss", 1e-12, 1e-10)
    assert_close(stats.entropy, ref.entropy, "entropy", 1e-12, 1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_no_worse_than_torch(dtype: torch.dtype) -> None:
    """Against float64, crossent's half-precision loss is no further off than torch's own composition in that dtype."""
    x = torch.randn(64, 300) * 4
    target = torch.randint(0, 300, (64,))
    options = {"softcap": 5.0, "temperature": 0.9}
    truth = reference(x.double(), target, reduction="none", **options).loss
    ours = crossent.cross_entropy(x.to(dtype), target, reduction="none", **options)
    theirs = F.cross_entropy(transformed(x.to(dtype), 5.0, 0.9), target, reduction="none")
    assert ours.dtype == dtype
    assert (ours.double() - truth).abs().max() <= (theirs.double() - truth).abs().max() * 1.01 + 1e-6


def test_under_autocast() -> None:
    x = torch.randn(8, 16)
    w = torch.randn(16, 16, requires_grad=True)
    target = torch.randint(0, 16, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = crossent.cross_entropy(x @ w, target, softcap=4.0, z_loss=0.01, return_stats=True)
    assert loss.dtype == torch.float32 and stats.entropy.dtype == torch.float32
    (loss + stats.entropy.mean()).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_inplace_backward_with_options() -> None:
    h = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 8, dtype=torch.float64)
    target = torch.tensor([0, 6, -100, 3, 3])
    loss = crossent.cross_entropy(h @ w.t(), target, softcap=2.0, z_loss=0.1, inplace_backward=True)
    loss.backward()
    h_ref = h.detach().clone().requires_grad_()
    reference(h_ref @ w.t(), target, softcap=2.0, z_loss=0.1).loss.backward()
    assert_close(h.grad, h_ref.grad, "gradient", 1e-12, 1e-10)


def test_compile_fullgraph_gives_the_same_results() -> None:
    x = torch.randn(6, 9, requires_grad=True)
    target = torch.tensor([0, 8, -100, 3, 3, 1])

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, stats = crossent.cross_entropy(x, target, softcap=3.0, temperature=0.9, z_loss=0.1, return_stats=True)
        return loss, stats.entropy, stats.accuracy

    eager = step(x)
    (g_eager,) = torch.autograd.grad(eager[0] + eager[1].sum(), x)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    (g_compiled,) = torch.autograd.grad(compiled[0] + compiled[1].sum(), x)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(g_eager, g_compiled)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"softcap": 0.0}, ValueError, "softcap must be a finite number > 0, got 0.0"),
        ({"softcap": -1.0}, ValueError, "softcap"),
        ({"softcap": math.inf}, ValueError, "softcap"),
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
        ({"temperature": math.nan}, ValueError, "temperature"),
        ({"z_loss": -0.1}, ValueError, "z_loss must be a finite number >= 0, got -0.1"),
        ({"softcap": "3"}, TypeError, "softcap must be a number, not str"),
        ({"return_stats": 1}, TypeError, "return_stats must be a bool"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        crossent.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), **options)  # type: ignore[call-overload]


def test_triton_names_the_options_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Triton kernels fall back through the dispatch seam, visibly: ``impl='triton'`` says why."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if _dispatch.triton_status() is not None:
        pytest.skip("triton is not installed")
    spec = _dispatch.spec_of(torch.randn(2, 3), options=("softcap", "return_stats"))
    assert _dispatch.resolve("cross_entropy", "auto", torch.device("cpu"), spec) != "triton"
    with pytest.raises(RuntimeError, match="do not take softcap, return_stats"):
        _dispatch.resolve("cross_entropy", "triton", torch.device("cpu"), spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 5),
    classes=st.integers(1, 7),
    softcap=st.one_of(st.none(), st.floats(0.5, 50)),
    temperature=st.floats(0.2, 5),
    z_loss=st.floats(0, 1),
    scale=st.floats(0.1, 100),
)
def test_property_matches_the_composition(
    rows: int, classes: int, softcap: float | None, temperature: float, z_loss: float, scale: float
) -> None:
    x = torch.randn(rows, classes, dtype=torch.float64) * scale
    target = torch.randint(0, classes, (rows,))
    options = {"softcap": softcap, "temperature": temperature, "z_loss": z_loss}
    loss, stats = crossent.cross_entropy(x, target, reduction="none", return_stats=True, **options)
    ref = reference(x, target, reduction="none", **options)  # type: ignore[arg-type]
    torch.testing.assert_close(loss, ref.loss, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(stats.entropy, ref.entropy, atol=1e-9, rtol=1e-9)
    assert (stats.entropy >= -1e-12).all() and (stats.entropy <= math.log(classes) + 1e-9).all()


def test_modules_take_the_options() -> None:
    x, target = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 5, -100, 2])
    options = {"softcap": 2.0, "temperature": 1.5, "z_loss": 0.1}
    module = crossent.nn.CrossEntropyLoss(reduction="sum", **options)
    assert_close(module(x, target), reference(x, target, reduction="sum", **options).loss, "module", 1e-12, 1e-10)
    loss, stats = crossent.nn.CrossEntropyLoss(return_stats=True, **options)(x, target)
    assert_close(stats.entropy, reference(x, target, **options).entropy, "module entropy", 1e-12, 1e-10)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        crossent.nn.CrossEntropyLoss(temperature=-1.0)


def test_the_linear_module_takes_the_options_and_the_shift() -> None:
    module = crossent.nn.LinearCrossEntropyLoss(4, 9, bias=True, dtype=torch.float64, softcap=3.0, shift=1)
    h, labels = torch.randn(2, 5, 4, dtype=torch.float64), torch.randint(0, 9, (2, 5))
    logits = module.linear(h)[:, :-1].transpose(1, 2)
    expected = reference(logits, labels[:, 1:], softcap=3.0).loss
    assert_close(module(h, labels), expected, "linear module", 1e-12, 1e-10)


@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_backend_in_low_precision(impl: str, kind: str, reduction: str, dtype: torch.dtype) -> None:
    """The native kernels and the PyTorch path, each option at once, close to the float64 composition."""
    call = make((16, 40), kind)
    x64 = call.pop("input").requires_grad_()  # type: ignore[attr-defined]
    target = call.pop("target")
    if kind == "probability":
        target = target.to(dtype)  # type: ignore[union-attr]
    args = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in call.items()}
    options = {"softcap": 4.0, "temperature": 0.8, "z_loss": 0.05}
    x = x64.detach().to(dtype).requires_grad_()
    loss, stats = crossent.cross_entropy(
        x, target, reduction=reduction, return_stats=True, impl=impl, **args, **options
    )
    ref = reference(
        x.detach().double().requires_grad_(),
        target.double() if kind == "probability" else target,
        reduction=reduction,
        **call,
        **options,
    )  # type: ignore[arg-type]
    tol = {torch.float32: 2e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(loss.double(), ref.loss, atol=tol, rtol=tol, equal_nan=True)
    for name in ("lse", "entropy", "z_loss"):
        torch.testing.assert_close(
            getattr(stats, name).double(), getattr(ref, name), atol=tol, rtol=tol, equal_nan=True
        )
    if kind != "probability":
        torch.testing.assert_close(stats.accuracy.double(), ref.accuracy, equal_nan=True)
    for use in ("loss", "all"):
        x.grad = None
        loss, stats = crossent.cross_entropy(
            x, target, reduction=reduction, return_stats=True, impl=impl, **args, **options
        )
        x_ref = x.detach().double().requires_grad_()
        ref = reference(
            x_ref, target.double() if kind == "probability" else target, reduction=reduction, **call, **options
        )  # type: ignore[arg-type]
        g = torch.linspace(-1, 1, loss.numel(), dtype=torch.float64).reshape(loss.shape)
        ours, theirs = (g.to(loss.dtype) * loss).sum(), (g * ref.loss).sum()
        if use == "all":
            ours = ours + stats.lse.sum() * 0.3 + stats.entropy.sum()
            theirs = theirs + ref.lse.sum() * 0.3 + ref.entropy.sum()
        ours.backward()
        theirs.backward()
        scale = x_ref.grad.abs().max().item()
        torch.testing.assert_close(x.grad.double(), x_ref.grad, atol=tol * max(scale, 1), rtol=tol, equal_nan=True)


@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_backward_with_the_entropys_gradient(impl: str, dtype: torch.dtype) -> None:
    """The gradient written over the logits includes the side terms, from logits read before they are overwritten."""
    h = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(30, 8)
    target = torch.tensor([0, 29, -100, 3, 3, 7])
    options = {"softcap": 3.0, "temperature": 0.9, "z_loss": 0.1}
    logits = (h @ w.t()).to(dtype)
    loss, stats = crossent.cross_entropy(logits, target, inplace_backward=True, return_stats=True, impl=impl, **options)
    (loss + 0.5 * stats.entropy.sum() + 0.2 * stats.lse.sum()).backward()
    h_ref = h.detach().double().requires_grad_()
    ref = reference((h_ref @ w.double().t()).to(dtype).double(), target, **options)
    (ref.loss + 0.5 * ref.entropy.sum() + 0.2 * ref.lse.sum()).backward()
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(h.grad.double(), h_ref.grad, atol=tol * h_ref.grad.abs().max().item(), rtol=tol)


def test_probability_target_and_weight_gradients_with_options() -> None:
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.rand(5, 6, dtype=torch.float64).softmax(1).requires_grad_()
    w = (torch.rand(6, dtype=torch.float64) + 0.5).requires_grad_()
    options = {"softcap": 2.0, "temperature": 0.8, "z_loss": 0.1}
    loss, stats = crossent.cross_entropy(x, t, w, label_smoothing=0.1, return_stats=True, **options)
    leaves = [a.detach().clone().requires_grad_() for a in (x, t, w)]
    ref = reference(leaves[0], leaves[1], leaves[2], label_smoothing=0.1, **options)
    ours = torch.autograd.grad(loss + stats.entropy.sum(), (x, t, w))
    theirs = torch.autograd.grad(ref.loss + ref.entropy.sum(), leaves)
    for name, a, e in zip(("input", "target", "weight"), ours, theirs, strict=True):
        assert_close(a, e, f"gradient of {name}", 1e-12, 1e-10)


@pytest.mark.parametrize("impl", ["native", "torch"])
@pytest.mark.parametrize("normalizer", [7.0, torch.tensor(7.0)], ids=["number", "tensor"])
def test_normalizer_divides_the_z_loss_too(impl: str, normalizer: object) -> None:
    """With ``normalizer`` the summed loss, z-loss included, is divided by it (for 'sum' and 'mean' alike)."""
    x = torch.randn(6, 9, requires_grad=True)
    target = torch.tensor([0, 8, -100, 3, 3, 1])
    weight = torch.rand(9) + 0.5
    options = {"softcap": 3.0, "z_loss": 0.1}
    loss, stats = crossent.cross_entropy(
        x, target, weight, reduction="mean", normalizer=normalizer, return_stats=True, impl=impl, **options
    )
    x_ref = x.detach().double().requires_grad_()
    ref = reference(x_ref, target, weight.double(), reduction="sum", **options)
    torch.testing.assert_close(loss.double(), ref.loss / 7.0)
    torch.testing.assert_close(stats.z_loss.double(), ref.z_loss / 7.0)
    loss.backward()
    (ref.loss / 7.0).backward()
    torch.testing.assert_close(x.grad.double(), x_ref.grad, atol=1e-6, rtol=1e-5)
