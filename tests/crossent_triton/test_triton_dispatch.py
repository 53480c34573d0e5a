"""The Triton path through crossent's public API, the support table, and torch.library registration."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from tests.crossent_triton.triton_env import triton_device

DEVICE = triton_device()
ct = pytest.importorskip("crossent.triton")
f64 = torch.float64


def test_public_api_runs_the_triton_kernels_when_asked() -> None:
    import crossent
    from crossent.triton._common import record_launches

    x = torch.randn(4, 6, dtype=f64, device=DEVICE, requires_grad=True)
    t = torch.tensor([5, 0, -100, 2], device=DEVICE)
    with record_launches() as launches:
        loss = crossent.cross_entropy(x, t, label_smoothing=0.1, impl="triton")
        loss.backward()
    assert launches, "impl='triton' did not launch a Triton kernel"
    x_ref = x.detach().clone().requires_grad_()
    F.cross_entropy(x_ref, t, label_smoothing=0.1).backward()
    torch.testing.assert_close(loss, F.cross_entropy(x_ref, t, label_smoothing=0.1))
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize(
    "op, options, reason",
    [
        ("cross_entropy", {}, None),
        ("cross_entropy", {"probability": True, "weight": True, "label_smoothing": 0.3}, None),
        ("nll_loss", {"dtype": torch.bfloat16, "ndim": 4}, None),
        ("log_softmax", {"dtype": torch.int64}, "float16, bfloat16, float32 or float64"),
        ("cross_entropy", {"weight_requires_grad": True}, "do not differentiate the weight"),
        ("linear_cross_entropy", {"dtype": torch.bfloat16, "probability": True, "label_smoothing": 0.1}, None),
        ("linear_cross_entropy", {"options": ("focal_gamma",)}, "do not take focal_gamma"),
        ("linear_cross_entropy", {"probability": True, "target_requires_grad": True}, "probability targets"),
        ("entropy", {}, "no Triton kernel for entropy"),
        ("cross_entropy", {"dtype": torch.bfloat16, "loss_dtype": torch.float32}, "loss in the input's dtype"),
        ("cross_entropy", {"dtype": torch.bfloat16, "loss_dtype": torch.bfloat16}, None),
    ],
)
def test_unsupported_reason(op: str, options: dict[str, object], reason: str | None) -> None:
    from crossent._dispatch import CallSpec

    got = ct.unsupported_reason(op, CallSpec(**options))
    assert got is None if reason is None else reason in got


def test_a_misspelled_option_is_an_error_not_a_silent_default() -> None:
    from crossent._dispatch import spec_of

    with pytest.raises(TypeError):
        spec_of(torch.zeros(2, 3), prob_target=True)


def test_every_dispatched_op_has_an_answer() -> None:
    from crossent import _dispatch

    for op in _dispatch.OPS:
        assert ct.unsupported_reason(op, _dispatch.CallSpec()) is None, op


def _samples() -> list[tuple[object, tuple[object, ...]]]:
    x = torch.randn(3, 5, dtype=f64, device=DEVICE, requires_grad=True)
    t = torch.tensor([4, -100, 0], device=DEVICE)
    p = torch.rand(3, 5, dtype=f64, device=DEVICE)
    z = x.detach().log_softmax(1).requires_grad_()
    # The package re-exports functions under the same names as its modules: import the modules.
    bce = importlib.import_module("crossent.triton.binary_cross_entropy")
    ce = importlib.import_module("crossent.triton.cross_entropy")
    kl_div = importlib.import_module("crossent.triton.kl_div")
    lce = importlib.import_module("crossent.triton.linear_cross_entropy")
    log_softmax = importlib.import_module("crossent.triton.log_softmax")
    nll_loss = importlib.import_module("crossent.triton.nll_loss")

    x3 = x.detach().unsqueeze(-1).requires_grad_()
    scale_ = importlib.import_module("crossent.triton._scale")
    stats = torch.zeros(3, 5, dtype=f64, device=DEVICE)
    half = torch.tensor(0.5, dtype=f64, device=DEVICE)
    return [
        (scale_.scale_, (torch.randn(3, 5, 2, device=DEVICE), torch.tensor(2.0, device=DEVICE))),
        (ce.cross_entropy_backward_op, (x3.detach(), t, None, stats, half, -100, 0.1, True, False)),
        (log_softmax.softmax_backward_op, (torch.randn_like(x), x.detach().softmax(1), 1, False)),
        (ce.cross_entropy_op, (x3, t, None, -100, 0.1, "mean", True, False)),
        (ce.cross_entropy_op, (x3, p.unsqueeze(-1), None, -100, 0.0, "none", False, False)),
        (nll_loss.nll_loss_op, (z.detach().unsqueeze(-1).requires_grad_(), t, None, -100, "sum")),
        (log_softmax.log_softmax_op, (x, 1)),
        (log_softmax.softmax_op, (x, 0)),
        (bce.bce_with_logits_op, (x, p, None, None, "mean")),
        (bce.bce_op, (p.requires_grad_(), p.detach(), None, "none")),
        (kl_div.kl_div_op, (z, p, "batchmean", False)),
        (lce.chunk_op, (x3.detach().clone(), t.unsqueeze(-1).clamp(min=-1), None, 0.1, half)),
        (lce.chunk_op, (x3.detach().clone(), p.detach().unsqueeze(-1), p.detach()[0], 0.0, None)),
    ]


@pytest.mark.parametrize("index", range(13))
def test_custom_ops_pass_opcheck(index: int) -> None:
    op, args = _samples()[index]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_compiles_with_fullgraph(reduction: str) -> None:
    """torch.compile traces through the custom ops (aot_eager: the graph capture, without codegen)."""
    x = torch.randn(4, 7, dtype=f64, device=DEVICE, requires_grad=True)
    t = torch.tensor([6, 0, -100, 3], device=DEVICE)

    def step(x: torch.Tensor) -> torch.Tensor:
        return ct.cross_entropy(x, t, None, -100, reduction, 0.1, False).sum() * 2

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    (grad,) = torch.autograd.grad(loss, x)
    x_ref = x.detach().clone().requires_grad_()
    expected = F.cross_entropy(x_ref, t, reduction=reduction, label_smoothing=0.1).sum() * 2
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, x_ref)[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_benchmark_explains_that_it_needs_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    from crossent.triton import bench

    assert bench.main([]) == 2
    assert "not measured" in capsys.readouterr().out


@pytest.mark.parametrize("normalizer", [2.5, torch.tensor(7)], ids=["float", "tensor"])
def test_normalizer_on_the_triton_path(normalizer: object) -> None:
    import crossent

    x = torch.randn(5, 6, dtype=f64, device=DEVICE, requires_grad=True)
    t = torch.tensor([5, 0, -100, 2, 1], device=DEVICE)
    ours = crossent.cross_entropy(x, t, label_smoothing=0.1, normalizer=normalizer, impl="triton")
    x_ref = x.detach().clone().requires_grad_()
    expected = F.cross_entropy(x_ref, t, reduction="sum", label_smoothing=0.1) / float(normalizer)
    torch.testing.assert_close(ours, expected, rtol=1e-14, atol=0)
    ours.backward()
    expected.backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-13, atol=1e-16)
