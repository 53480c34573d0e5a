"""Triton cross_entropy against torch.nn.functional: values and gradients, every option and layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.crossent_triton.triton_env import LAYOUTS, triton_device
from tests.helpers import check_against

DEVICE = triton_device()
ct = pytest.importorskip("crossent.triton")
use_tuning = pytest.importorskip("crossent.triton._common").use_tuning
f64 = torch.float64


def ours(reduction: str, eps: float = 0.0, ignore_index: int = -100, inplace: bool = False):  # noqa: ANN201
    return lambda x, t, w=None: ct.cross_entropy(x, t, w, ignore_index, reduction, eps, inplace)


def oracle(reduction: str, eps: float = 0.0, ignore_index: int = -100):  # noqa: ANN201
    return lambda x, t, w=None: F.cross_entropy(
        x, t, w, ignore_index=ignore_index, reduction=reduction, label_smoothing=eps
    )


def logits(*shape: int, dtype: torch.dtype = f64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


# (2, 11, 2): 4 rows of 11 classes, a K-dim input; 11 is not a multiple of any block.
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted, eps", [(False, 0.0), (True, 0.2)])
def test_class_index_targets(layout: str, reduction: str, weighted: bool, eps: float) -> None:
    x = logits(2, 11, 2)
    t = torch.tensor([[3, -100], [10, 0]], device=DEVICE)
    w = torch.rand(11, dtype=f64, device=DEVICE) if weighted else None
    check_against(ours(reduction, eps), oracle(reduction, eps), (x, t, w))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted, eps", [(False, 0.0), (True, 0.2)])
def test_probability_targets(layout: str, reduction: str, weighted: bool, eps: float) -> None:
    x = logits(2, 11, 2)
    t = torch.rand(2, 11, 2, dtype=f64, device=DEVICE)
    w = torch.rand(11, dtype=f64, device=DEVICE) if weighted else None
    check_against(ours(reduction, eps), oracle(reduction, eps), (x, t, w), grad_args=(0, 1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_target_ignored(reduction: str) -> None:
    """'mean' over nothing is 0/0 = NaN with an all-zero gradient; 'sum' and 'none' give zeros."""
    t = torch.full((3,), -100, device=DEVICE)
    out = check_against(ours(reduction, 0.1), oracle(reduction, 0.1), (logits(3, 5), t))
    if reduction == "mean":
        assert out.isnan()


def test_zero_total_weight_gives_nan_loss_and_gradient() -> None:
    w = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=f64, device=DEVICE)
    t = torch.tensor([0, 1, -100], device=DEVICE)
    for eps in (0.0, 0.3):
        check_against(ours("mean", eps), oracle("mean", eps), (logits(3, 4), t, w))


@pytest.mark.parametrize("prob", [False, True])
def test_single_class(prob: bool) -> None:
    x = logits(3, 1)
    t = torch.rand(3, 1, dtype=f64, device=DEVICE) if prob else torch.zeros(3, dtype=torch.long, device=DEVICE)
    check_against(ours("mean", 0.1), oracle("mean", 0.1), (x, t), grad_args=(0,))


@pytest.mark.parametrize("prob", [False, True])
def test_unbatched_input(prob: bool) -> None:
    x = logits(7)
    t = torch.rand(7, dtype=f64, device=DEVICE) if prob else torch.tensor(4, device=DEVICE)
    for reduction in ("mean", "none"):
        check_against(ours(reduction, 0.1), oracle(reduction, 0.1), (x, t))


def test_ignore_index_inside_the_class_range() -> None:
    t = torch.tensor([2, 0, 2, 4], device=DEVICE)
    w = torch.rand(5, dtype=f64, device=DEVICE)
    check_against(ours("mean", 0.1, ignore_index=2), oracle("mean", 0.1, ignore_index=2), (logits(4, 5), t, w))


def test_full_label_smoothing_with_weights() -> None:
    """eps = 1 ignores the target class, but 'mean' still divides by the target weights."""
    w = torch.tensor([1.0, 2.0, 3.0], dtype=f64, device=DEVICE)
    t = torch.tensor([2, 2, 0], device=DEVICE)
    check_against(ours("mean", 1.0), oracle("mean", 1.0), (logits(3, 3), t, w))


@pytest.mark.parametrize("layout", ["fused", "streamed"], indirect=True)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_non_finite_logits(layout: str, eps: float) -> None:
    """-inf entries, a row of -inf, +inf and NaN rows, and a row whose first blocks are all -inf."""
    inf, nan = math.inf, math.nan
    x = torch.tensor(
        [
            [0.0, -inf, 1.0, 2.0, 3.0, 0.5],
            [0.0, -inf, 1.0, 2.0, 3.0, 0.5],
            [-inf] * 6,
            [0.0, inf, 1.0, 2.0, 3.0, 0.5],
            [0.0, 1.0, nan, 2.0, 3.0, 0.5],
            [-inf, -inf, -inf, -inf, 1.0, 2.0],
            [1000.0, 0.0, -1000.0, 3.0, 2.0, 1.0],
        ],
        dtype=f64,
        device=DEVICE,
    )
    t = torch.tensor([0, 1, 0, 0, 0, 5, 2], device=DEVICE)
    check_against(ours("none", eps), oracle("none", eps), (x, t))
    probs = torch.tensor([0.5, 0.0, 0.2, 0.1, 0.1, 0.1], dtype=f64, device=DEVICE).expand(7, 6).contiguous()
    check_against(ours("none", eps), oracle("none", eps), (x, probs), grad_args=(0, 1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(0, 4), (2, 4, 0), (3, 0)])
def test_empty_inputs(reduction: str, shape: tuple[int, ...]) -> None:
    x = logits(*shape)
    index_shape = (shape[0], *shape[2:])
    if shape[1] > 0:
        t = torch.zeros(index_shape, dtype=torch.long, device=DEVICE)
        check_against(ours(reduction), oracle(reduction), (x, t))
    check_against(ours(reduction), oracle(reduction), (x, torch.rand(shape, dtype=f64, device=DEVICE)))


def test_mixed_dtype_probability_targets_promote() -> None:
    """Probability path: the loss dtype is promote(input, target, weight), as in torch."""
    x = logits(3, 5, dtype=torch.float32)
    t = torch.rand(3, 5, dtype=f64, device=DEVICE)
    check_against(ours("mean"), oracle("mean"), (x, t), atol=1e-6, rtol=1e-5)


def test_non_contiguous_logits(layout: str) -> None:
    x = logits(9, 3).t()  # (3, 9) with a class stride of 3
    t = torch.tensor([8, -100, 0], device=DEVICE)
    check_against(ours("mean", 0.1), oracle("mean", 0.1), (x, t))


@pytest.mark.parametrize("grad_output", [1.0, 2.5])
def test_gradient_written_by_forward_is_scaled_in_backward(grad_output: float) -> None:
    """grad_output == 1 skips the rescale on the device; any other value rescales in place."""
    t = torch.tensor([1, 0, -100], device=DEVICE)
    g = torch.tensor(grad_output, dtype=f64, device=DEVICE)
    check_against(ours("sum", 0.1), oracle("sum", 0.1), (logits(3, 6), t), grad_output=g)


def test_backward_twice_through_a_retained_graph() -> None:
    x = logits(3, 6).requires_grad_()
    t = torch.tensor([1, 0, 5], device=DEVICE)
    loss = ct.cross_entropy(x, t, None, -100, "mean", 0.0, False)
    loss.backward(retain_graph=True)
    (loss * 3).backward()
    expected = torch.autograd.grad(F.cross_entropy(x, t) * 4, x)[0]
    torch.testing.assert_close(x.grad, expected)


def test_caller_logits_are_never_written_by_default() -> None:
    x = logits(3, 6).requires_grad_()
    before = x.detach().clone()
    ct.cross_entropy(x, torch.tensor([1, 0, 5], device=DEVICE), None, -100, "mean", 0.1, False).backward()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_inplace_backward_overwrites_the_logits_with_their_gradient(reduction: str) -> None:
    hidden = torch.randn(4, 3, dtype=f64, device=DEVICE, requires_grad=True)
    head = torch.randn(7, 3, dtype=f64, device=DEVICE)
    t = torch.tensor([1, 6, -100, 0], device=DEVICE)
    z_ref = (hidden @ head.T).detach().requires_grad_()
    expected_loss = F.cross_entropy(z_ref, t, reduction=reduction, label_smoothing=0.1)
    expected_dz = torch.autograd.grad(expected_loss.sum(), z_ref)[0]

    z = hidden @ head.T
    loss = ct.cross_entropy(z, t, None, -100, reduction, 0.1, True)
    torch.testing.assert_close(loss, expected_loss.detach())
    loss.sum().backward(retain_graph=True)
    torch.testing.assert_close(hidden.grad, expected_dz @ head)
    torch.testing.assert_close(z.detach(), expected_dz)  # the logits now hold their gradient
    with pytest.raises(RuntimeError, match="inplace_backward=True overwrote the logits"):
        loss.sum().backward()


def test_inplace_backward_under_no_grad_leaves_the_logits_alone() -> None:
    z = logits(3, 6).requires_grad_() * 1.0
    before = z.detach().clone()
    with torch.no_grad():
        ct.cross_entropy(z, torch.tensor([1, 0, 5], device=DEVICE), None, -100, "mean", 0.0, True)
    assert torch.equal(z.detach(), before)


def test_double_backward_is_refused() -> None:
    x = logits(2, 3).requires_grad_()
    loss = ct.cross_entropy(x, torch.tensor([0, 2], device=DEVICE), None, -100, "mean", 0.0, False)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_class_weight_gradient_is_refused_on_the_probability_path() -> None:
    w = torch.rand(4, dtype=f64, device=DEVICE, requires_grad=True)
    with pytest.raises(NotImplementedError, match="impl='torch'"):
        ct.cross_entropy(logits(2, 4), torch.rand(2, 4, dtype=f64, device=DEVICE), w, -100, "mean", 0.0, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("prob", [False, True])
def test_low_precision_error_is_no_worse_than_torch(dtype: torch.dtype, prob: bool) -> None:
    """Against a float64 ground truth, our same-dtype error stays within torch's own (plus a margin)."""
    x64 = logits(16, 37) * 4
    t = torch.rand(16, 37, dtype=f64, device=DEVICE).to(dtype) if prob else torch.randint(0, 37, (16,), device=DEVICE)
    t64 = t.double() if prob else t
    truth_x = x64.clone().requires_grad_()
    truth = F.cross_entropy(truth_x, t64, label_smoothing=0.1, reduction="none")
    truth_grad = torch.autograd.grad(truth.sum(), truth_x)[0]

    def error(fn) -> tuple[float, float]:  # noqa: ANN001
        x = x64.to(dtype).requires_grad_()
        out = fn(x, t, None)
        grad = torch.autograd.grad(out.sum(), x)[0]
        return (out.double() - truth).abs().max().item(), (grad.double() - truth_grad).abs().max().item()

    ours_err = error(ours("none", 0.1))
    torch_err = error(oracle("none", 0.1))
    # A margin of two units in the last place of the largest value: summation order differs.
    ulp = torch.finfo(dtype).eps
    assert ours_err[0] <= torch_err[0] + 2 * ulp * truth.abs().max().item()
    assert ours_err[1] <= torch_err[1] + 2 * ulp * truth_grad.abs().max().item()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 19),
    spatial=st.sampled_from([(), (2,), (1, 3)]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    eps=st.sampled_from([0.0, 0.05, 0.5]),
    prob=st.booleans(),
    layout_name=st.sampled_from(sorted(LAYOUTS)),
    data=st.data(),
)
def test_random_cases_match_torch(
    n: int,
    c: int,
    spatial: tuple[int, ...],
    reduction: str,
    weighted: bool,
    eps: float,
    prob: bool,
    layout_name: str,
    data: st.DataObject,
) -> None:
    shape = (n, c, *spatial)
    x = logits(*shape) * data.draw(st.sampled_from([1.0, 30.0]))
    w = torch.rand(c, dtype=f64, device=DEVICE) if weighted else None
    if prob:
        t = torch.rand(shape, dtype=f64, device=DEVICE)
        grad_args: tuple[int, ...] = (0, 1)
    else:
        t = torch.randint(0, c, (n, *spatial), device=DEVICE)
        t[torch.rand(t.shape, device=DEVICE) < data.draw(st.sampled_from([0.0, 0.4, 1.0]))] = -100
        grad_args = (0,)
    with use_tuning(**LAYOUTS[layout_name]):
        check_against(ours(reduction, eps), oracle(reduction, eps), (x, t, w), grad_args=grad_args)
