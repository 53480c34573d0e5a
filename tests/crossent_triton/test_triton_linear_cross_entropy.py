"""crossent.linear_cross_entropy on the Triton chunk kernel (``impl="triton"``) against torch.

The oracle is ``F.cross_entropy(F.linear(h, W, b), y)`` in float64, under a random upstream gradient;
every test also checks that the kernel ran (``record_launches``). Under ``TRITON_INTERPRET=1`` the
kernel runs on CPU tensors, which is how CI tests the path ``impl="auto"`` takes on CUDA.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import crossent
from tests.crossent_triton.triton_env import triton_device
from tests.helpers import check_against

DEVICE = triton_device()
ct = pytest.importorskip("crossent.triton")
from crossent.triton._common import record_launches, use_tuning  # noqa: E402

F64 = torch.float64
N, H, C = 13, 5, 11  # 13 rows in chunks of 4: three full chunks and a ragged one of 1


def naive(h, w, b, y, class_weight=None, **kwargs):
    """The oracle: the logits materialised by F.linear, then torch's cross_entropy."""
    for keyword in ("chunk_size", "workspace_bytes", "impl"):
        kwargs.pop(keyword, None)
    logits = F.linear(h, w.reshape(-1, w.shape[-1]), None if b is None else b.reshape(-1))
    if w.dim() > 2:  # K-dimensional: (N, C, d1)
        logits = logits.reshape(h.shape[0], *w.shape[:-1])
    return F.cross_entropy(logits, y, weight=class_weight, **kwargs)


def naive_without_bias(h, w, y, **kwargs):
    return naive(h, w, None, y, **kwargs)


def triton_without_bias(h, w, y, **kwargs):
    return crossent.linear_cross_entropy(h, w, y, impl="triton", **kwargs)


def on_triton(h, w, b, y, class_weight=None, **kwargs):
    with record_launches() as launches:
        out = crossent.linear_cross_entropy(h, w, y, linear_bias=b, weight=class_weight, impl="triton", **kwargs)
    assert launches, "impl='triton' did not launch the chunk kernel"
    return out


def problem(n: int = N, ignore: str = "some", dtype: torch.dtype = F64, classes: int = C):
    h = torch.randn(n, H, dtype=dtype, device=DEVICE)
    w = torch.randn(classes, H, dtype=dtype, device=DEVICE)
    b = torch.randn(classes, dtype=dtype, device=DEVICE)
    y = torch.randint(0, classes, (n,), device=DEVICE)
    if ignore == "some":
        y[::3] = -100
    elif ignore == "all":
        y.fill_(-100)
    return h, w, b, y


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("ignore", ["none", "some", "all"])
def test_class_indices_match_torch(reduction: str, ignore: str) -> None:
    h, w, b, y = problem(ignore=ignore)
    kwargs = {"reduction": reduction, "chunk_size": 4}
    if ignore == "all":  # every row is dropped before the matmuls: nothing reaches the kernel
        out = check_against(triton_without_bias, naive_without_bias, (h, w, y), kwargs, grad_args=(0, 1))
        assert out.isnan().all() if reduction == "mean" else (out == 0).all()
        return
    check_against(on_triton, naive, (h, w, b, y), kwargs, grad_args=(0, 1, 2))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_class_weights_and_label_smoothing(reduction: str, smoothing: float) -> None:
    h, w, b, y = problem()
    cw = torch.rand(C, dtype=F64, device=DEVICE) + 0.1
    kwargs = {"reduction": reduction, "label_smoothing": smoothing, "chunk_size": 5}
    check_against(on_triton, naive, (h, w, b, y, cw), kwargs, grad_args=(0, 1, 2))


def test_every_row_layout_of_the_kernel(layout: str) -> None:
    """One block per row, a loop of blocks, and rows split into segments (two-stage reduction)."""
    h, w, b, y = problem(n=7)
    cw = torch.rand(C, dtype=F64, device=DEVICE)
    check_against(on_triton, naive, (h, w, b, y, cw), {"label_smoothing": 0.1, "chunk_size": 3}, (0, 1, 2))


@pytest.mark.parametrize("chunk", [{"chunk_size": 1}, {"chunk_size": 12}, {"chunk_size": 13}, {"workspace_bytes": 200}])
def test_chunk_boundaries(chunk: dict[str, int]) -> None:
    h, w, b, y = problem()
    check_against(on_triton, naive, (h, w, b, y), {"reduction": "none", **chunk}, grad_args=(0, 1, 2))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_probability_targets(reduction: str) -> None:
    h, w, b, _ = problem()
    p = torch.randn(N, C, dtype=F64, device=DEVICE).softmax(1)
    cw = torch.rand(C, dtype=F64, device=DEVICE)
    kwargs = {"reduction": reduction, "label_smoothing": 0.1, "chunk_size": 4}
    check_against(on_triton, naive, (h, w, b, p, cw), kwargs, grad_args=(0, 1, 2))


def test_k_dimensional_classifier() -> None:
    h = torch.randn(6, H, dtype=F64, device=DEVICE)
    w = torch.randn(C, 3, H, dtype=F64, device=DEVICE)  # logits (N, C, 3)
    y = torch.randint(0, C, (6, 3), device=DEVICE)
    y[1, 2] = -100
    check_against(on_triton, naive, (h, w, None, y), {"reduction": "none", "chunk_size": 4}, grad_args=(0, 1))


def test_normalizer() -> None:
    h, w, b, y = problem()
    expected = lambda h, w, b, y, **kw: naive(h, w, b, y, reduction="sum") / 7.5  # noqa: E731
    check_against(on_triton, expected, (h, w, b, y), {"normalizer": 7.5, "chunk_size": 4}, grad_args=(0, 1, 2))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_causal_shift(reduction: str) -> None:
    hidden = torch.randn(2, 7, H, dtype=F64, device=DEVICE)
    w = torch.randn(C, H, dtype=F64, device=DEVICE)
    labels = torch.randint(0, C, (2, 7), device=DEVICE)
    labels[0, 3] = -100

    def shifted(h, w, y, **kwargs):  # position t predicts label t + 1; the last position of each sequence none
        logits = F.linear(h[:, :-1], w).flatten(0, 1)
        loss = F.cross_entropy(logits, y[:, 1:].flatten(), reduction=reduction)
        return torch.cat([loss.view(2, 6), loss.new_zeros(2, 1)], 1) if reduction == "none" else loss

    def ours(h, w, y, **kwargs):
        return on_triton(h, w, None, y, shift=1, reduction=reduction, chunk_size=4)

    check_against(ours, shifted, (hidden, w, labels), grad_args=(0, 1))


def test_empty_batch() -> None:
    h, w, b, y = problem(n=0)
    check_against(triton_without_bias, naive_without_bias, (h, w, y), {"reduction": "sum"}, grad_args=(0, 1))


def test_retained_graph_backward_twice_recomputes_the_same_gradients() -> None:
    h, w, b, y = (t.requires_grad_() if t.is_floating_point() else t for t in problem())
    loss = on_triton(h, w, b, y, chunk_size=4)
    loss.backward(retain_graph=True)
    first = [t.grad.clone() for t in (h, w, b)]
    with record_launches() as launches:
        loss.backward()  # the forward's gradients were handed over: this one runs the kernel again
    assert launches
    for t, g in zip((h, w, b), first, strict=True):
        torch.testing.assert_close(t.grad, 2 * g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_low_precision_against_float64(dtype: torch.dtype, reduction: str) -> None:
    """Errors against the float64 loss of the same inputs: bfloat16 no worse than torch's naive bfloat16
    loss (the bound the PyTorch path meets), float32 within a few units of float32 rounding."""
    torch.manual_seed(0)
    n, hidden, v = 96, 32, 300
    h = torch.randn(n, hidden, device=DEVICE).to(dtype)
    w = (torch.randn(v, hidden, device=DEVICE) / hidden**0.5).to(dtype)
    b = torch.randn(v, device=DEVICE).to(dtype)
    y = torch.randint(0, v, (n,), device=DEVICE)
    y[::10] = -100

    def run(fn, as_dtype):
        args = [t.to(as_dtype).clone().requires_grad_() for t in (h, w, b)]
        out = fn(*args)
        upstream = torch.arange(out.numel(), device=DEVICE).reshape(out.shape) % 4 / 4 + 0.5  # exact in bf16
        out.backward(upstream.to(out.dtype))
        return [t.detach().double() for t in (out, *(a.grad for a in args))]

    def plain(h_, w_, b_):
        return F.cross_entropy(F.linear(h_, w_, b_), y, reduction=reduction)

    def fused(h_, w_, b_):
        return on_triton(h_, w_, b_, y, reduction=reduction, chunk_size=40)

    truth = run(plain, F64)
    with use_tuning(fused_max_cols=512):  # each row in one block: fewer interpreted programs
        ours = run(fused, dtype)
    baseline = run(plain, dtype)
    eps = torch.finfo(dtype).eps
    # Triton's interpreter truncates float32 to bfloat16 where a GPU rounds to nearest: the gradient the
    # kernel writes then carries up to one more unit in the last place, half of one on average
    truncation = eps / 2 if DEVICE.type == "cpu" else 0.0
    for name, o, base, t in zip(("value", "input", "weight", "bias"), ours, baseline, truth, strict=True):
        error, naive_error = float((o - t).norm() / t.norm()), float((base - t).norm() / t.norm())
        if dtype == torch.bfloat16:
            bound = max(naive_error, eps / 2) + truncation  # no result beats rounding to its dtype
            assert error <= bound, f"{name}: {error:.3g} > naive {naive_error:.3g}"
        else:
            assert error <= 8 * eps, f"{name}: {error:.3g}"


def test_autocast_takes_the_logits_in_float32() -> None:
    h, w, b, y = (t.float() if t.is_floating_point() else t for t in problem())
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        ours = on_triton(h, w, b, y, chunk_size=4, reduction="none")
        torch_path = crossent.linear_cross_entropy(h, w, y, linear_bias=b, chunk_size=4, reduction="none", impl="torch")
    assert ours.dtype == torch_path.dtype == torch.float32
    torch.testing.assert_close(ours, torch_path)


def test_compiles_with_fullgraph() -> None:
    """torch.compile traces the chunk kernel's custom op, forward and backward (aot_eager: the capture)."""
    torch._dynamo.reset()
    h, w, b, y = problem()

    def step(h, w, b):
        return crossent.linear_cross_entropy(h, w, y, linear_bias=b, label_smoothing=0.1, chunk_size=4, impl="triton")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = [t.clone().requires_grad_() for t in (h, w, b)]
    loss = compiled(*args)
    loss.backward()
    refs = [t.clone().requires_grad_() for t in (h, w, b)]
    expected = naive(*refs, y, label_smoothing=0.1)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for a, r in zip(args, refs, strict=True):
        torch.testing.assert_close(a.grad, r.grad)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"softcap": 30.0}, "do not take softcap"),
        ({"temperature": 0.7, "z_loss": 1e-4}, "do not take temperature, z_loss"),
        ({"return_stats": True}, "do not take return_stats"),
        ({"focal_gamma": 2.0}, "do not take focal_gamma"),
        ({"weight": "grad"}, "do not differentiate the weight"),
        ({"target": "grad"}, "does not differentiate probability targets"),
    ],
    ids=["softcap", "temperature+z_loss", "return_stats", "focal", "weight-grad", "target-grad"],
)
def test_what_the_kernel_does_not_take_is_named(kwargs: dict[str, object], reason: str) -> None:
    h, w, b, y = problem()
    call = dict(kwargs)
    target: torch.Tensor = y
    if call.pop("weight", None) == "grad":
        target = torch.rand(N, C, dtype=F64, device=DEVICE)
        call["weight"] = torch.rand(C, dtype=F64, device=DEVICE, requires_grad=True)
    if call.pop("target", None) == "grad":
        target = torch.rand(N, C, dtype=F64, device=DEVICE, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"impl='triton' cannot run linear_cross_entropy: the .*{reason}"):
        crossent.linear_cross_entropy(h, w, target, impl="triton", **call)
    # impl="auto" takes the PyTorch path for it instead, and says why (on CUDA, where it would pick Triton)
    from crossent import _dispatch

    spec = _dispatch.spec_of(h, options=tuple(k for k in kwargs if k not in ("weight", "target")))
    if "weight" in kwargs:
        spec = _dispatch.spec_of(h, probability=True, weight=True, weight_requires_grad=True)
    if "target" in kwargs:
        spec = _dispatch.spec_of(h, probability=True, target_requires_grad=True)
    assert _dispatch.resolve("linear_cross_entropy", "auto", torch.device("cuda"), spec) == "torch"
    with record_launches() as launches:
        crossent.linear_cross_entropy(h, w, target, impl="torch", **call)
    assert not launches


def test_auto_picks_the_kernel_on_cuda_for_what_it_takes() -> None:
    from crossent import _dispatch

    spec = _dispatch.spec_of(torch.empty(0, dtype=torch.bfloat16), probability=True, weight=True, label_smoothing=0.1)
    assert _dispatch.resolve("linear_cross_entropy", "auto", torch.device("cuda"), spec) == "triton"
    assert _dispatch.explain(torch.device("cuda"))["linear_cross_entropy"] == "triton"


def test_vocab_parallel_does_not_run_on_triton() -> None:
    h, w, _, y = problem()
    with pytest.raises(ValueError, match="no options, workspace_bytes or Triton"):
        crossent.linear_cross_entropy(h, w, y, impl="triton", process_group=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_workspace_is_the_chunk_of_logits_alone(dtype: torch.dtype) -> None:
    """No allocation of N x V values: the kernel writes the gradient over the chunk's logits, and the
    budget holds the chunk's logits (and, where the matmul cannot add bfloat16 products into the float32
    weight gradient, as on CPU, the chunk's gradient copied to float32)."""
    if DEVICE.type != "cpu":
        pytest.skip("on CUDA, tests/fused/test_memory.py::test_cuda_peak_allocated checks the peak")
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    n, v, budget = 128, 96, 8 * 96 * (dtype.itemsize + 4)  # 8 rows of logits and their float32 copy
    h = torch.randn(n, H, device=DEVICE).to(dtype).requires_grad_()
    w = torch.randn(v, H, device=DEVICE).to(dtype).requires_grad_()
    y = torch.randint(0, v, (n,), device=DEVICE)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        on_triton(h, w, None, y, workspace_bytes=budget).backward()
    sizes = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.alloc_size > 0:
            sizes.append(event.extra_fields.alloc_size)
    gradients = max(v * H * 4, n * H * 4)  # the float32 weight gradient, or the input's
    assert max(sizes) <= max(gradients, budget) < n * v * dtype.itemsize // 4
