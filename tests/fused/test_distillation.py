"""linear_distillation against the same divergence composed from torch ops on the full logits.

The oracle forms both models' logits with ``F.linear``, their log-softmaxes, and the divergence from
``F.kl_div(..., log_target=True)``, in float64; the fused loss must give its value and the gradient of
every input (the teacher's too) for any upstream gradient.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as TF

import crossent
from crossent.fused import LinearDistillationLoss, linear_distillation
from crossent.fused import _distillation_function as function
from crossent.fused import distillation as distillation_module
from tests.fused.test_memory import _cpu_allocations
from tests.helpers import check_against

F64 = torch.float64
DIVERGENCES = ["kl", "reverse_kl", "jsd"]
REDUCTIONS = ["none", "mean", "sum"]


def oracle(hs, ws, ht, wt, bs, bt, target, *, divergence, beta, temperature, ignore_index, reduction, chunk_size=None):
    """The divergence of the full logits, from torch's log_softmax and kl_div."""
    log_q = (TF.linear(hs, ws, bs) / temperature).log_softmax(-1)
    log_p = (TF.linear(ht, wt, bt) / temperature).log_softmax(-1)

    def kl(log_a, log_b):  # KL(a || b)
        return TF.kl_div(log_b, log_a, log_target=True, reduction="none").sum(-1)

    if divergence == "kl":
        loss = kl(log_p, log_q)
    elif divergence == "reverse_kl":
        loss = kl(log_q, log_p)
    else:
        beta = 0.5 if beta is None else beta
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
        loss = beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)
    keep = torch.ones(loss.shape, dtype=torch.bool) if target is None else target != ignore_index
    loss = torch.where(keep, loss, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / keep.sum()


def fused(hs, ws, ht, wt, bs, bt, target, **kwargs):
    return linear_distillation(hs, ws, ht, wt, target, student_bias=bs, teacher_bias=bt, **kwargs)


def _problem(leading=(2, 5), h_s=4, h_t=3, v=7, dtype=F64, bias=True, ignore="some", scale=1.0):
    hs = torch.randn(*leading, h_s, dtype=dtype) * scale
    ws = torch.randn(v, h_s, dtype=dtype)
    ht = torch.randn(*leading, h_t, dtype=dtype) * scale
    wt = torch.randn(v, h_t, dtype=dtype)
    bs = torch.randn(v, dtype=dtype) if bias else None
    bt = torch.randn(v, dtype=dtype) if bias else None
    target = None if ignore is None else torch.randint(0, v, leading)
    if ignore == "some":
        target.view(-1)[::3] = -100
    elif ignore == "all":
        target.fill_(-100)
    return [hs, ws, ht, wt, bs, bt, target]


def _check(args, grad=(0, 1, 2, 3, 4, 5), atol=1e-12, rtol=1e-10, **kwargs):
    grad_args = [i for i in grad if args[i] is not None]
    return check_against(fused, oracle, args, _settings(**kwargs), grad_args=grad_args, atol=atol, rtol=rtol)


def _settings(divergence="kl", beta=None, temperature=1.0, ignore_index=-100, reduction="mean", **extra):
    return dict(
        divergence=divergence,
        beta=beta,
        temperature=temperature,
        ignore_index=ignore_index,
        reduction=reduction,
        **extra,
    )


@pytest.mark.parametrize("ignore", [None, "some", "all"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("divergence", "beta"), [("kl", None), ("reverse_kl", None), ("jsd", None), ("jsd", 0.2)])
def test_matches_torch(divergence, beta, reduction, bias, ignore):
    """Value and every gradient (student and teacher), rows of (B, T), a chunk size dividing nothing."""
    args = _problem(bias=bias, ignore=ignore)
    out = _check(args, divergence=divergence, beta=beta, temperature=2.5, reduction=reduction, chunk_size=3)
    if ignore == "all" and reduction == "mean":
        assert out.isnan()  # 0 / 0, as torch's cross_entropy


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 22, 23, 64, None])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_chunk_sizes(chunk_size, reduction):
    args = _problem(leading=(23,), v=11)
    _check(args, divergence="jsd", reduction=reduction, chunk_size=chunk_size)


@pytest.mark.parametrize("temperature", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_temperature(temperature, divergence):
    _check(_problem(), divergence=divergence, temperature=temperature, reduction="none", chunk_size=4)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_frozen_teacher(divergence):
    """The usual case: the teacher requires no grad, and only the student's gradients are formed."""
    args = _problem()
    _check(args, grad=(0, 1, 4), divergence=divergence)


def test_unbatched_and_three_leading_dims():
    hs, ws, ht, wt, bs, bt, target = _problem(leading=(2, 3, 4))
    _check([hs, ws, ht, wt, bs, bt, target], reduction="none")
    out = _check([hs[0, 0, 0], ws, ht[0, 0, 0], wt, bs, bt, None], reduction="none")
    assert out.shape == ()


def test_mean_is_kl_div_batchmean():
    hs, ws, ht, wt, *_ = _problem(leading=(6,), bias=False)
    expected = TF.kl_div(
        (hs @ ws.T).log_softmax(-1), (ht @ wt.T).log_softmax(-1), log_target=True, reduction="batchmean"
    )
    torch.testing.assert_close(linear_distillation(hs, ws, ht, wt), expected, atol=1e-14, rtol=1e-12)


def test_identical_models_give_zero():
    hs, ws, *_ = _problem(leading=(5,))
    for divergence in DIVERGENCES:
        assert linear_distillation(hs, ws, hs, ws, divergence=divergence, reduction="sum").abs() < 1e-14


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_rows(reduction):
    hs, ws, ht, wt, bs, bt, target = _problem(leading=(0,))
    leaves = [t.requires_grad_() for t in (hs, ws, ht, wt, bs, bt)]
    out = fused(hs, ws, ht, wt, bs, bt, target, reduction=reduction)
    assert out.shape == ((0,) if reduction == "none" else ())
    if reduction == "mean":
        assert out.isnan()
    grads = torch.autograd.grad(out.sum(), leaves)
    assert all(g.shape == t.shape and not g.any() for g, t in zip(grads, leaves, strict=True))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_extreme_logits_in_float32(divergence):
    """Logits of +-1e4 in float32: the loss and gradients of the float64 oracle to float32 precision."""
    args = _problem(leading=(9,), v=13, dtype=torch.float32, scale=3000.0)
    f64 = [None if a is None or not a.is_floating_point() else a.double() for a in args[:6]] + [args[6]]
    logits = TF.linear(args[0], args[1], args[4])
    assert logits.abs().max() > 1e4
    kwargs = _settings(divergence=divergence, reduction="sum", chunk_size=4)
    ours = [a.clone().requires_grad_() if a is not None and a.is_floating_point() else a for a in args]
    truth = [a.clone().requires_grad_() if a is not None and a.is_floating_point() else a for a in f64]
    out, expected = fused(*ours, **kwargs), oracle(*truth, **kwargs)
    assert torch.isfinite(out)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-3)
    for a, e in zip(torch.autograd.grad(out, ours[:6]), torch.autograd.grad(expected, truth[:6]), strict=True):
        assert torch.isfinite(a).all()
        # a saturated softmax makes some gradients 0 up to exp(-1e4): the scale is that of a one-hot
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4 * max(e.abs().max().item(), 1.0))


# with only the teacher's classes masked, KL(q || p) is +inf (p = 0 < q): reverse KL is left out
@pytest.mark.parametrize(
    ("divergence", "teacher_only"), [("kl", False), ("reverse_kl", False), ("jsd", False), ("kl", True), ("jsd", True)]
)
def test_minus_inf_logits(divergence, teacher_only):
    """Masked classes (bias -inf): 0 log 0 = 0, finite loss and gradients, 0 gradient at those classes."""
    hs, ws, ht, wt, bs, bt, target = _problem(leading=(8,), v=9)
    masked = torch.tensor([1, 4, 5])
    bt[masked] = -math.inf
    if not teacher_only:
        bs[masked] = -math.inf
    kwargs = _settings(divergence=divergence, reduction="sum", chunk_size=3)
    ours = [t.clone().requires_grad_() for t in (hs, ws, ht, wt, bs, bt)]
    # the oracle's kl_div would give 0 * -inf = nan at a -inf teacher log-probability: -1e30 is 0 after exp
    truth = [t.clone().nan_to_num(neginf=-1e30).requires_grad_() for t in (hs, ws, ht, wt, bs, bt)]
    out, expected = fused(*ours, target, **kwargs), oracle(*truth, target, **kwargs)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    grads = torch.autograd.grad(out, ours)
    for a, e in zip(grads, torch.autograd.grad(expected, truth), strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-10)
    assert not grads[5][masked].any()


def _relative_errors(result, truth):
    return [float((r - t).norm() / t.norm()) for r, t in zip(result, truth, strict=True)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("divergence", ["kl", "jsd"])
def test_half_precision_no_worse_than_torch(divergence, reduction, dtype):
    """Against the float64 loss of the same half-precision inputs, the fused call (softmax math in
    float32, weight gradients accumulated in float32) errs no more than torch's composition in ``dtype``."""
    n, h, v = 256, 64, 1024
    inputs = [
        torch.randn(n, h).to(dtype),
        (torch.randn(v, h) / h**0.5).to(dtype),
        torch.randn(n, 32).to(dtype),
        (torch.randn(v, 32) / 32**0.5).to(dtype),
        torch.randn(v).to(dtype),
        torch.randn(v).to(dtype),
    ]
    target = torch.randint(0, v, (n,))
    target[::10] = -100
    kwargs = _settings(divergence=divergence, temperature=2.0, reduction=reduction)

    def run(fn, as_dtype):
        leaves = [t.to(as_dtype).requires_grad_() for t in inputs]
        out = fn(*leaves, target, **kwargs)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        assert out.dtype == as_dtype and all(g.dtype == as_dtype for g in grads)
        return [t.detach().double() for t in (out, *grads)]

    truth = run(oracle, F64)
    naive = _relative_errors(run(oracle, dtype), truth)
    ours = _relative_errors(run(fused, dtype), truth)
    half_ulp = torch.finfo(dtype).eps / 2  # no loss beats correct rounding to its dtype
    assert ours[0] <= max(naive[0], half_ulp)
    names = ("student_input", "student_weight", "teacher_input", "teacher_weight", "student_bias", "teacher_bias")
    for name, error, naive_error in zip(names, ours[1:], naive[1:], strict=True):
        assert error <= naive_error, f"{name} gradient: {error:.3g} > torch's {naive_error:.3g}"


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradcheck(divergence, reduction):
    hs, ws, ht, wt, bs, bt, target = _problem(leading=(4,), h_s=3, h_t=2, v=5)
    leaves = tuple(t.requires_grad_() for t in (hs, ws, ht, wt, bs, bt))

    def f(*tensors):
        return fused(*tensors, target, divergence=divergence, temperature=1.5, reduction=reduction, chunk_size=3)

    assert torch.autograd.gradcheck(f, leaves)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_backward_twice_through_a_retained_graph(reduction):
    """The first backward hands over the gradients formed in the forward; the second recomputes them."""
    args = _problem()
    leaves = [t.requires_grad_() for t in args[:6]]
    out = fused(*args, divergence="jsd", reduction=reduction, chunk_size=4)
    g = torch.rand_like(out)
    out.backward(g, retain_graph=True)
    first = [t.grad.clone() for t in leaves]
    out.backward(g)
    expected = torch.autograd.grad(oracle(*args, **_settings(divergence="jsd", reduction=reduction)), leaves, g)
    for a, b, e in zip(first, leaves, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(b.grad, 2 * e, atol=1e-12, rtol=1e-10)


def test_double_backward_is_refused():
    hs, ws, ht, wt, *_ = _problem()
    hs.requires_grad_()
    with pytest.raises(RuntimeError, match=r"double backward \(create_graph=True\) is not supported"):
        torch.autograd.grad(linear_distillation(hs, ws, ht, wt), hs, create_graph=True)


def _saved(fn):
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn()
    return out, saved


def test_what_is_saved_for_backward():
    """'none' saves the inputs and the row mask; 'mean' also the gradients, handed over without a copy."""
    hs, ws, ht, wt, bs, bt, target = _problem(leading=(16,), v=50)
    ws.requires_grad_()
    inputs = {t.data_ptr() for t in (hs, ws, ht, wt, bs, bt, target)}
    _, saved = _saved(lambda: fused(hs, ws, ht, wt, bs, bt, target, reduction="none", chunk_size=4))
    extra = [t for t in saved if t is not None and t.data_ptr() not in inputs]
    assert sum(t.numel() for t in extra) <= 2 * hs.shape[0]  # the mask and the kept rows' numbers
    out, saved = _saved(lambda: fused(hs, ws, ht, wt, bs, bt, target, chunk_size=4))
    (precomputed,) = [t for t in saved if t.shape == ws.shape and t.data_ptr() != ws.data_ptr()]
    out.backward()
    assert ws.grad.data_ptr() == precomputed.data_ptr()


def test_no_grad_computes_only_the_loss(monkeypatch):
    args = _problem()
    for t in args[:6]:
        t.requires_grad_()
    monkeypatch.setattr(function.Model, "absorb", lambda *a: pytest.fail("a gradient was formed under no_grad"))
    with torch.no_grad():
        out = fused(*args)
    assert not out.requires_grad
    torch.testing.assert_close(out, oracle(*[a.detach() if a is not None else a for a in args], **_settings()))


def test_autocast_runs_the_matmuls_in_bfloat16_and_returns_float32():
    hs, ws, ht, wt, bs, bt, target = _problem(dtype=torch.float32)
    ws.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(hs, ws, ht, wt, bs, bt, target)
    assert out.dtype == torch.float32
    lowered = [None if t is None else t.bfloat16() for t in (hs, ws, ht, wt, bs, bt)]
    torch.testing.assert_close(out, fused(*lowered, target).float(), rtol=1e-2, atol=0)  # bf16's rounding
    out.backward()
    assert ws.grad.dtype == torch.float32


def test_mixed_dtypes_promote():
    hs, ws, ht, wt, bs, bt, target = _problem(dtype=torch.float32)
    out = fused(hs, ws, ht.bfloat16(), wt.bfloat16(), bs, bt.bfloat16(), target)
    assert out.dtype == torch.float32
    expected = oracle(hs.double(), ws.double(), ht.bfloat16().double(), wt.bfloat16().double(), bs.double(),
                      bt.bfloat16().double(), target, **_settings())  # fmt: skip
    torch.testing.assert_close(out.double(), expected, rtol=2e-3, atol=0)  # the teacher's logits in bfloat16


def _fused_for_compile(hs, ws, ht, wt, bs, bt, target, reduction):
    return fused(hs, ws, ht, wt, bs, bt, target, divergence="jsd", beta=0.3, temperature=2.0, reduction=reduction,
                 chunk_size=4)  # fmt: skip


def _compile_case(fn, reduction):
    torch.manual_seed(1)
    args = _problem(leading=(7,), dtype=torch.float32)
    leaves = [t.requires_grad_() for t in args[:6]]
    out = fn(*args, reduction)
    return (out.detach(), *torch.autograd.grad(out, leaves, torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)))


@pytest.mark.parametrize(
    ("backend", "reduction"), [("aot_eager", "none"), ("aot_eager", "mean"), ("aot_eager", "sum"), ("inductor", "mean")]
)
def test_compile_fullgraph_matches_eager(backend, reduction):
    """Under torch.compile every row is kept and masked (no data-dependent size), with no graph break."""
    torch._dynamo.reset()
    compiled = torch.compile(_fused_for_compile, fullgraph=True, backend=backend)
    expected = _compile_case(_fused_for_compile, reduction)
    for a, e in zip(_compile_case(compiled, reduction), expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_docstring_examples():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    tests = finder.find(distillation_module.linear_distillation, "linear_distillation")
    tests += finder.find(LinearDistillationLoss, "LinearDistillationLoss")
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert runner.summarize(verbose=False).attempted >= 8


def test_module_is_the_function():
    args = _problem()
    loss = LinearDistillationLoss(divergence="jsd", beta=0.25, temperature=3.0, reduction="none", chunk_size=2)
    assert (
        crossent.LinearDistillationLoss is LinearDistillationLoss
        and crossent.linear_distillation is linear_distillation
    )
    hs, ws, ht, wt, bs, bt, target = args
    torch.testing.assert_close(
        loss(hs, ws, ht, wt, target, bs, bt), fused(*args, **_settings("jsd", 0.25, 3.0, reduction="none"))
    )
    assert "divergence='jsd', beta=0.25, temperature=3.0" in repr(loss)


def test_peak_memory_well_below_the_naive_pair():
    """N=256, H=64, V=32768 float32: one chunk of both models' logits at a time, no (N, V) buffer."""
    n, h, v = 256, 64, 32768
    hs, ht = torch.randn(n, h, requires_grad=True), torch.randn(n, h)
    ws, wt = (torch.randn(v, h) / h**0.5).requires_grad_(), torch.randn(v, h) / h**0.5
    target = torch.randint(0, v, (n,))

    def naive() -> None:
        log_q, log_p = (hs @ ws.T).log_softmax(-1), (ht @ wt.T).log_softmax(-1)
        TF.kl_div(log_q, log_p, log_target=True, reduction="batchmean").backward()

    def ours() -> None:
        linear_distillation(hs, ws, ht, wt, target).backward()

    naive_largest, naive_peak = _cpu_allocations(naive)
    hs.grad = ws.grad = None
    largest, peak = _cpu_allocations(ours)
    logits_bytes = n * v * 4
    gradients = (hs.numel() + ws.numel()) * 4
    assert naive_largest >= logits_bytes and naive_peak >= 4 * logits_bytes
    assert largest < logits_bytes // 2
    assert peak <= gradients + 20 * 2**20 < naive_peak // 5, f"peak {peak / 2**20:.1f} MiB"


H, W = torch.randn(4, 3), torch.randn(5, 3)
ERRORS = {
    "student_input not a tensor": (
        (H.tolist(), W, H, W),
        {},
        TypeError,
        r"argument 'student_input' \(position 1\) must be Tensor, not list",
    ),
    "bias not a tensor": (
        (H, W, H, W),
        {"teacher_bias": 3},
        TypeError,
        "argument 'teacher_bias' must be Tensor, not int",
    ),
    "target not a tensor": ((H, W, H, W, [0, 1, 2, 3]), {}, TypeError, r"argument 'target' \(position 5\)"),
    "0-d input": (
        (torch.tensor(1.0), W, H, W),
        {},
        RuntimeError,
        "expected student_input with dimensionality 1 or more",
    ),
    "1-d weight": ((H, W, H, W[0]), {}, RuntimeError, r"expected a 2-d teacher_weight \(V, H\), got shape \(3,\)"),
    "in_features": (
        (H, W[:, :2], H, W),
        {},
        RuntimeError,
        r"student_input and student_weight last dimensions .* \(4, 3\) and \(5, 2\)",
    ),
    "classes": ((H, W, H, W[:4]), {}, ValueError, r"same number of classes .* \(5, 3\) and \(4, 3\)"),
    "no classes": ((H, W[:0], H, W[:0]), {}, ValueError, "at least one class"),
    "leading dims": (
        (H, W, H[:3], W),
        {},
        ValueError,
        r"student_input \(4, 3\) and teacher_input \(3, 3\) must have the same leading dims",
    ),
    "bias shape": (
        (H, W, H, W),
        {"student_bias": torch.zeros(4)},
        RuntimeError,
        r"student_bias of shape \(5,\), got \(4,\)",
    ),
    "integer input": ((H.long(), W.long(), H, W), {}, RuntimeError, "floating-point student_input, got torch.int64"),
    "weight dtype": (
        (H, W, H, W.double()),
        {},
        RuntimeError,
        "teacher_weight of teacher_input's dtype torch.float32, got torch.float64",
    ),
    "target shape": (
        (H, W, H, W, torch.zeros(2, 2, dtype=torch.long)),
        {},
        ValueError,
        r"target of shape \(4,\) .* got \(2, 2\)",
    ),
    "float target": ((H, W, H, W, torch.zeros(4)), {}, RuntimeError, "class ids .* got torch.float32"),
    "divergence": (
        (H, W, H, W),
        {"divergence": "js"},
        ValueError,
        "divergence must be one of 'kl', 'reverse_kl', 'jsd', got 'js'",
    ),
    "beta with kl": (
        (H, W, H, W),
        {"beta": 0.5},
        ValueError,
        "beta is the weight of the teacher in divergence='jsd'; 'kl' takes none",
    ),
    "beta 0": (
        (H, W, H, W),
        {"divergence": "jsd", "beta": 0.0},
        ValueError,
        r"beta must be a number in \(0, 1\), got 0.0",
    ),
    "beta 1": ((H, W, H, W), {"divergence": "jsd", "beta": 1}, ValueError, r"beta must be a number in \(0, 1\), got 1"),
    "temperature 0": (
        (H, W, H, W),
        {"temperature": 0},
        ValueError,
        "temperature must be a positive finite number, got 0",
    ),
    "temperature inf": (
        (H, W, H, W),
        {"temperature": math.inf},
        ValueError,
        "temperature must be a positive finite number, got inf",
    ),
    "reduction": ((H, W, H, W), {"reduction": "batchmean"}, ValueError, "batchmean is not a valid value for reduction"),
    "chunk_size": ((H, W, H, W), {"chunk_size": 0}, ValueError, "chunk_size must be a positive int, got 0"),
    "ignore_index": ((H, W, H, W), {"ignore_index": 1.5}, TypeError, "ignore_index must be an int, got float"),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_errors(case):
    args, kwargs, kind, message = ERRORS[case]
    with pytest.raises(kind, match=message):
        linear_distillation(*args, **kwargs)


def test_module_checks_its_settings():
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        LinearDistillationLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="'reverse_kl' takes none"):
        LinearDistillationLoss(divergence="reverse_kl", beta=0.1)
