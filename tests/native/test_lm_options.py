"""The cross-entropy kernels' language-model options (softcap, temperature, z-loss, the extra statistics E
and correct, and the lse and entropy factors of the backward), called directly at every level, against
a float64 torch composition on the same (rounded) inputs:

    z = softcap tanh(x / softcap) / T    CE = F.cross_entropy(z, ...)    lse = logsumexp(z)    H = entropy(softmax(z))

The gradients are float64 autograd's of ``coef CE + lse_coef lse + ent_coef H`` (the backward) and of
``c CE + z_c z_loss lse^2`` (the forward's own gradient) with respect to x.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from crossent.native import kernels
from tests.native.native_env import max_error, ulp_at

ATOL, RTOL = 2e-6, 2e-5
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LOWEST = torch.finfo(torch.float32).min

# (softcap, temperature): 0 / 1 mean none
OPTIONS = {
    "plain": (0.0, 1.0),
    "softcap": (5.0, 1.0),
    "temperature": (0.0, 0.7),
    "softcap-temperature": (5.0, 2.0),
    "softcap-hot": (15.0, 0.5),
}
# every option in float32, three in the half types
CASES = [
    pytest.param(dtype, *OPTIONS[option], id=f"{option}-{str(dtype).removeprefix('torch.')}")
    for dtype in DTYPES
    for option in OPTIONS
    if dtype == torch.float32 or option in ("plain", "softcap", "softcap-temperature")
]

# targets: (probability, weighted, smoothing, which rows are ignored, ignore_index)
TARGETS = {
    "indices": (False, False, 0.0, "none", -100),
    "indices-weighted-smoothed-some-ignored": (False, True, 0.1, "some", -100),
    "indices-all-ignored": (False, True, 0.0, "all", -100),
    "indices-ignore-a-class": (False, True, 0.2, "class", 1),
    "probabilities": (True, False, 0.0, "none", -100),
    "probabilities-weighted-smoothed": (True, True, 0.1, "none", -100),
}


def _transform(x: torch.Tensor, softcap: float, temperature: float) -> torch.Tensor:
    z = softcap * torch.tanh(x / softcap) if softcap else x
    return z / temperature


def _lse_entropy(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lse = k + log sum_c exp(z_c - k) (k = the row max, a constant: torch.logsumexp's own gradient
    is 1 throughout a row of -3e38) and H = -sum_c p_c log p_c, where p_c = 0 (a -inf z_c) adds 0
    (not 0 * -inf) to the value and the gradient"""
    k = z.detach().amax(1, keepdim=True).clamp_min(torch.finfo(z.dtype).min)
    log_p = torch.log_softmax(z, 1)
    p = log_p.exp()
    return k.squeeze(1) + (z - k).exp().sum(1).log(), -(p * log_p.masked_fill(p == 0, 0.0)).sum(1)


def _ce_rows(z, target, prob, weight, ignore_index, eps) -> torch.Tensor:
    w = None if weight is None else weight.to(z.dtype)
    t = target if prob is None else prob.to(z.dtype)
    return F.cross_entropy(z, t, weight=w, ignore_index=ignore_index, reduction="none", label_smoothing=eps)


@functools.cache
def _inputs(name: str, dtype: torch.dtype, n: int = 29, c: int = 53, scale: float = 6.0):
    """The same inputs for every level (the float64 references are formed once, see ``_memo``)."""
    probability, weighted, eps, ignored, ignore_index = TARGETS[name]
    torch.manual_seed(zlib.crc32(f"{name} {dtype}".encode()))
    x = (torch.randn(n, c) * scale).to(dtype)
    target = torch.randint(0, c, (n,))
    if ignored == "some":
        target[::3] = ignore_index
    elif ignored == "all":
        target[:] = ignore_index
    elif ignored == "class":
        target[::4] = ignore_index  # a class index: ignored as well
    prob = torch.rand(n, c).to(dtype) if probability else None
    weight = torch.rand(c) + 0.25 if weighted else None
    return x, (None if probability else target), prob, weight, eps, ignore_index


def _kept(target: torch.Tensor | None, n: int, ignore_index: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool) if target is None else target != ignore_index


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = ATOL, rtol: float = RTOL):
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )


_MEMO: dict[Any, Any] = {}


def _memo(key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``, once per key (None: every time): the references of a case serve every level."""
    if key is None:
        return compute()
    if key not in _MEMO:
        _MEMO[key] = compute()
    return _MEMO[key]


def _gradients(x: torch.Tensor, total_of: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """float64 autograd's gradient of ``total_of`` at x, and for half x torch's own in x's dtype"""
    x64 = x.detach().double().requires_grad_()
    (truth,) = torch.autograd.grad(total_of(x64), x64)
    if x.dtype == torch.float32:
        return (truth,)
    xl = x.detach().clone().requires_grad_()
    (theirs,) = torch.autograd.grad(total_of(xl), xl)
    return truth, theirs


def _check_gradient(ours: torch.Tensor, x: torch.Tensor, total_of, what: str, key: Any = None) -> None:
    """``ours`` against float64 autograd of ``total_of(x)``; for half inputs, no worse than torch's own
    computation in that dtype (1.5 times its error plus an ulp at the gradient's magnitude)."""
    truth, *theirs = _memo(key, lambda: _gradients(x, total_of))
    assert ours.dtype == x.dtype and ours.shape == x.shape
    if x.dtype == torch.float32:
        _assert_close(ours, truth, what, atol=ATOL * max(1.0, truth.abs().max().item()))
        return
    err_ours, err_torch = max_error(ours, truth), max_error(theirs[0], truth)
    finite = truth[torch.isfinite(truth)]
    bound = 1.5 * err_torch + ulp_at(finite.abs().max().item() if finite.numel() else 0.0, x.dtype)
    assert err_ours <= bound, f"{what}: error {err_ours:.3g} > {bound:.3g} (torch's: {err_torch:.3g})"


def _reference_stats(x, target, prob, weight, ignore_index, eps, softcap, temperature) -> dict[str, torch.Tensor]:
    n = x.shape[0]
    z = _transform(x.double(), softcap, temperature)
    kept = _kept(target, n, ignore_index)
    lse, entropy = _lse_entropy(z)
    ref = {
        "loss": _ce_rows(z, target, prob, weight, ignore_index, eps),
        "k": z.amax(1).clamp_min(LOWEST),
        "lse": lse,
        "entropy": entropy,
    }
    if prob is None:
        w = weight.double() if weight is not None else torch.ones(x.shape[1], dtype=torch.float64)
        ref["total_weight"] = torch.where(kept, w[target.clamp(0)], 0).sum()
        # the first argmax of float32 z (the kernel's tanh rounds as torch's, to a couple of ulps)
        z32 = _transform(x.float(), softcap, temperature)
        ref["correct"] = (kept & (z32.argmax(1) == target)).double()
    else:
        q = prob.double() * (1 - eps) + eps / x.shape[1]
        ref["mass"] = (q if weight is None else q * weight.double()).sum(1)
    return ref


def _check_stats(stats, total_weight, x, target, prob, weight, ignore_index, eps, softcap, temperature, key=None):
    """The kernel's rows (loss, k, S, B, E, correct) against float64 on the same inputs."""
    args = (x, target, prob, weight, ignore_index, eps, softcap, temperature)
    ref = _memo(None if key is None else ("stats", key), lambda: _reference_stats(*args))
    loss, k, s, mass, e, correct = stats.double()
    _assert_close(loss, ref["loss"], "loss row")
    _assert_close(k, ref["k"], "shift k", atol=1e-5)
    _assert_close(k + s.log(), ref["lse"], "lse = k + log S")
    _assert_close(s.log() - e / s, ref["entropy"], "H = log S - E / S")
    assert (e <= 0).all() or e.isnan().any()
    if prob is None:
        _assert_close(total_weight, ref["total_weight"], "total weight")
        assert torch.equal(correct, ref["correct"]), "correct"
    else:
        _assert_close(mass, ref["mass"], "mass B")
        assert (correct == 0).all()


@pytest.mark.parametrize("dtype, softcap, temperature", CASES)
@pytest.mark.parametrize("name", TARGETS)
def test_forward_statistics_and_gradient(level, dtype, softcap, temperature, name):
    x, target, prob, weight, eps, ignore_index = _inputs(name, dtype)
    n = x.shape[0]
    kept = _kept(target, n, ignore_index)
    count = kept.sum().item()
    total = 0.0  # sum_n m_n w_{y_n}, for a class-index 'mean'
    if target is not None:
        total = (torch.ones(n) if weight is None else weight[target.clamp(0)]).double()[kept].sum().item()
    # (coef, coef_scale, mean_over_weight, z_loss): 'sum', a tensor upstream, a class-index 'mean'
    modes = [(None, 2.5, False, 0.0), (torch.tensor(1.5), 2.0, False, 1e-2)]
    if prob is None and count:
        modes.append((None, 3.0, True, 5e-2))
    case = (name, dtype, softcap, temperature)
    for mode, (coef, coef_scale, mean_over_weight, z_loss) in enumerate(modes):
        stats, total_weight, grad = kernels.cross_entropy_rows(
            x, target, prob, weight, ignore_index, eps, True, coef, coef_scale, mean_over_weight,
            softcap, temperature, z_loss, True,
        )  # fmt: skip
        assert stats.shape == (6, n) and stats.dtype == torch.float32
        _check_stats(stats, total_weight, x, target, prob, weight, ignore_index, eps, softcap, temperature, case)
        c = (1.0 if coef is None else coef.item()) * coef_scale
        ce_coef = c / total if mean_over_weight else c
        z_coef = c / count if mean_over_weight else c

        def total_of(xv, ce_coef=ce_coef, z_coef=z_coef, z_loss=z_loss):
            z = _transform(xv, softcap, temperature)
            lse = torch.where(kept, _lse_entropy(z)[0], 0)
            ce = _ce_rows(z, target, prob, weight, ignore_index, eps)
            return ce_coef * ce.sum() + z_coef * z_loss * (lse * lse).sum()

        what = f"forward gradient {coef_scale=} {mean_over_weight=} {z_loss=}"
        _check_gradient(grad, x, total_of, what, ("forward", *case, mode))
        # without the extras and the gradient: the same four rows
        plain, _, none = kernels.cross_entropy_rows(
            x, target, prob, weight, ignore_index, eps, False, coef, coef_scale, mean_over_weight,
            softcap, temperature, z_loss, False,
        )  # fmt: skip
        assert plain.shape == (4, n) and none.numel() == 0
        rows = 4 if prob is not None else 3  # the mass row is not written for class indices
        assert torch.equal(plain[:rows], stats[:rows])


@functools.cache
def _backward_factors(name: str, n: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor | None, ...]]]:
    """coef, and the (lse_coef, ent_coef) pairs, the same for every level"""
    _, _, _, _, ignore_index = TARGETS[name]
    x, target, *_ = _inputs(name, torch.float32)
    kept = _kept(target, n, ignore_index)
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    coef = torch.rand(n, generator=generator) + 0.5
    lse_coef = torch.where(kept, torch.rand(n, generator=generator) + 0.5, 0)  # the caller zeroes ignored rows
    ent_coef = torch.where(kept, torch.rand(n, generator=generator) - 0.5, 0)
    return coef, [(None, None), (lse_coef, None), (None, ent_coef), (lse_coef, ent_coef)]


@pytest.mark.parametrize("dtype, softcap, temperature", CASES)
@pytest.mark.parametrize("name", TARGETS)
def test_backward_with_lse_and_entropy_factors(level, dtype, softcap, temperature, name):
    x, target, prob, weight, eps, ignore_index = _inputs(name, dtype)
    n = x.shape[0]
    stats, _, _ = kernels.cross_entropy_rows(
        x, target, prob, weight, ignore_index, eps, False, None, 1.0, False, softcap, temperature, 0.0, True
    )
    mass = stats[3] if prob is not None else None
    coef, factors = _backward_factors(name, n)
    for which, (lse_coef, ent_coef) in enumerate(factors):
        args = (x, target, prob, weight, stats[1], stats[2], mass, coef, ignore_index, eps, softcap, temperature)
        extra = (lse_coef, ent_coef, stats[4] if ent_coef is not None else None)
        grad = kernels.cross_entropy_rows_backward(*args, *extra)

        def total_of(xv, lse_coef=lse_coef, ent_coef=ent_coef):
            z = _transform(xv, softcap, temperature)
            lse, entropy = _lse_entropy(z)
            out = (coef.to(z.dtype) * _ce_rows(z, target, prob, weight, ignore_index, eps)).sum()
            if lse_coef is not None:
                out = out + (lse_coef.to(z.dtype) * lse).sum()
            if ent_coef is not None:
                out = out + (ent_coef.to(z.dtype) * entropy).sum()
            return out

        what = f"backward lse_coef={lse_coef is not None} ent_coef={ent_coef is not None}"
        _check_gradient(grad, x, total_of, what, ("backward", name, dtype, softcap, temperature, which))
        # the in-place variant writes the same gradient over the logits
        over = x.clone()
        kernels.cross_entropy_rows_backward_into(over, over, *args[1:], *extra)
        assert torch.equal(over.nan_to_num(), grad.nan_to_num()) and torch.equal(over.isnan(), grad.isnan())


def test_0_dim_factors_and_ent_sum_is_required(level):
    x, target, prob, weight, eps, ignore_index = _inputs("indices", torch.float32)
    stats, _, _ = kernels.cross_entropy_rows(
        x, target, None, None, -100, 0.0, False, None, 1.0, False, 5.0, 1.0, 0.0, True
    )
    args = (x, target, None, None, stats[1], stats[2], None, torch.tensor(2.0), -100, 0.0, 5.0, 1.0)
    n = x.shape[0]
    scalar = kernels.cross_entropy_rows_backward(*args, torch.tensor(0.5), torch.tensor(-0.25), stats[4])
    per_row = kernels.cross_entropy_rows_backward(*args, torch.full((n,), 0.5), torch.full((n,), -0.25), stats[4])
    assert torch.equal(scalar, per_row)
    with pytest.raises(ValueError, match="ent_sum"):
        kernels.cross_entropy_rows_backward(*args, None, torch.full((n,), 0.5), None)


# ---- extreme logits and the argmax ---------------------------------------------------------------


@functools.cache
def _extreme_rows() -> tuple[torch.Tensor, torch.Tensor]:
    inf = math.inf
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(9))
    x[0] = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4, 3.0])
    x[1] = torch.tensor([-1e4, -1e4, 1e4, -1e4, -1e4, -1e4])
    x[2] = 1e4
    x[3, 1] = -inf
    x[4, 2] = -inf  # at the target
    x[5] = -inf  # all -inf
    x[6] = torch.tensor([-inf, -inf, 0.0, -inf, -inf, -inf])
    x[7] = -1.5e38  # z near the lowest float32 (T = 0.5: -3e38)
    x[8] = torch.tensor([-1e4, 2.0, -inf, 1e4, 0.5, -inf])
    return x, torch.tensor([2, 2, 2, 2, 2, 2, 2, 0, 3])


@pytest.mark.parametrize("softcap, temperature", OPTIONS.values(), ids=OPTIONS)
@pytest.mark.parametrize("z_loss", [0.0, 1e-3], ids=["no-z-loss", "z-loss"])
def test_extreme_logits(level, softcap, temperature, z_loss):
    x, target = _extreme_rows()
    case = ("extreme", softcap, temperature, z_loss)
    stats, total_weight, grad = kernels.cross_entropy_rows(
        x, target, None, None, -100, 0.1, True, None, 1.0, False, softcap, temperature, z_loss, True
    )
    _check_stats(stats, total_weight, x, target, None, None, -100, 0.1, softcap, temperature, case)

    def forward_total(xv):
        z = _transform(xv, softcap, temperature)
        lse = _lse_entropy(z)[0]
        return _ce_rows(z, target, None, None, -100, 0.1).sum() + z_loss * (lse * lse).sum()

    _check_gradient(grad, x, forward_total, "forward gradient", (*case, "forward"))
    factors = torch.full((x.shape[0],), 0.75)
    back = kernels.cross_entropy_rows_backward(
        x, target, None, None, stats[1], stats[2], None, factors, -100, 0.1, softcap, temperature,
        factors, -factors, stats[4],
    )  # fmt: skip

    def backward_total(xv):
        z = _transform(xv, softcap, temperature)
        lse, entropy = _lse_entropy(z)
        return 0.75 * (_ce_rows(z, target, None, None, -100, 0.1).sum() + lse.sum() - entropy.sum())

    _check_gradient(back, x, backward_total, "backward gradient", (*case, "backward"))


def test_a_row_of_minus_inf_has_the_statistics_of_no_finite_softmax(level):
    x = torch.full((2, 5), -math.inf)
    stats, _, grad = kernels.cross_entropy_rows(
        x, torch.tensor([0, -100]), None, None, -100, 0.0, True, None, 1.0, False, 0.0, 0.7, 1e-3, True
    )
    loss, k, s, _, e, correct = stats
    assert k.eq(LOWEST).all() and s.eq(0).all() and e.eq(0).all()
    assert torch.equal(correct, torch.tensor([1.0, 0.0]))  # torch.argmax of all -inf is 0
    assert grad.isnan().all()  # 0 times a softmax without a finite value, ignored row included
    # with a softcap the row is finite: a uniform softmax
    stats, _, grad = kernels.cross_entropy_rows(
        x, torch.tensor([0, -100]), None, None, -100, 0.0, True, None, 1.0, False, 3.0, 1.0, 1e-3, True
    )
    _assert_close(stats[0, 0], torch.tensor(math.log(5)), "uniform loss")
    assert torch.equal(grad, torch.zeros(2, 5))  # dz/dx = 0 at -inf


@pytest.mark.parametrize("softcap", [0.0, 2.0], ids=["plain", "softcap"])
def test_argmax_ties_go_to_the_first_index(level, softcap):
    c = 40
    x = torch.randn(6, c)
    x[:, 5] = x[:, 17] = x[:, 33] = 10.0  # three maxima
    target = torch.tensor([5, 17, 33, 4, 5, 17])
    x[4, 2] = 10.0  # an earlier maximum
    x[5, 17] = 11.0  # a unique one
    stats, *_ = kernels.cross_entropy_rows(
        x, target, None, None, -100, 0.0, False, None, 1.0, False, softcap, 1.0, 0.0, True
    )
    assert torch.equal(stats[5], torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    # a softcap saturates different logits to the same z: the first of them wins
    y = torch.full((3, c), -1.0)
    y[:, 7], y[:, 9] = 200.0, 300.0
    stats, *_ = kernels.cross_entropy_rows(
        y, torch.tensor([7, 9, 9]), None, None, -100, 0.0, False, None, 1.0, False, 1.0, 1.0, 0.0, True
    )
    assert torch.equal(stats[5], torch.tensor([1.0, 0.0, 0.0]))


def test_nan_logits_follow_torch_argmax(level):
    """torch.argmax takes the first NaN as the maximum: a row is correct when its first NaN is the target."""
    x = torch.randn(4, 8)
    x[:, 0] = 50.0
    x[0, 3] = x[1, 3] = x[1, 6] = x[2, 1] = math.nan
    target = torch.tensor([3, 6, 3, 0])
    stats, *_ = kernels.cross_entropy_rows(
        x, target, None, None, -100, 0.0, False, None, 1.0, False, 0.0, 1.0, 0.0, True
    )
    expected = (x.argmax(1) == target).float()
    assert torch.equal(stats[5], expected) and expected.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_compiled_calls_use_the_fakes():
    """torch.compile(fullgraph=True) traces the ops with the new arguments through their fakes."""
    torch._dynamo.reset()
    x = torch.randn(7, 11)
    target = torch.tensor([0, 1, -100, 3, 4, 5, 10])

    def fn(x, target):
        stats, total_weight, grad = kernels.cross_entropy_rows(
            x, target, None, None, -100, 0.1, True, None, 1.0, True, 4.0, 0.8, 1e-2, True
        )
        factors = torch.ones(7)
        back = kernels.cross_entropy_rows_backward(
            x, target, None, None, stats[1], stats[2], None, factors, -100, 0.1, 4.0, 0.8, factors, factors, stats[4]
        )
        return stats[[0, 1, 2, 4, 5]], total_weight, grad, back

    try:
        eager = fn(x, target)
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")(x, target)
    finally:
        torch._dynamo.reset()
    for a, b in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)
