"""The memory contract of linear_cross_entropy: what it saves for backward and what it allocates.

Saved bytes are counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor the autograd
Function saves passes through the pack hook. Allocations are read from the profiler: with
``profile_memory=True`` the CPU allocator reports every allocation and free, each with the running
total of bytes it has handed out since profiling began, so the largest single allocation and the peak
of that total are exact for everything allocated through torch (BLAS scratch space is not included;
it is small and independent of N x V). When a CUDA device is present, the same peak is checked with
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from crossent.fused import linear_cross_entropy
from crossent.ops import _layout

F32 = torch.float32


def _problem(n: int, h: int, v: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    hidden = torch.randn(n, h, device=device, requires_grad=True)
    weight = (torch.randn(v, h, device=device) / h**0.5).requires_grad_()
    target = torch.randint(0, v, (n,), device=device)
    target[::10] = -100
    return hidden, weight, target


def _saved(fn):
    """Run ``fn`` with pack hooks on; return its output and the tensors autograd saved for backward."""
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _bytes_beyond_inputs(saved: list[torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes of the saved tensors that are not (views of) the inputs, each storage counted once."""
    input_storages = {_storage(t) for t in inputs}
    extra = {_storage(t): t.untyped_storage().nbytes() for t in saved if _storage(t) not in input_storages}
    return sum(extra.values())


def test_none_saves_inputs_and_o_n_scalars():
    h, w, y = _problem(64, 16, 300)
    _, saved = _saved(lambda: linear_cross_entropy(h, w, y, reduction="none", chunk_size=8))
    n = h.shape[0]
    # max and log-sum-exp per row (float32) and the kept-row numbers (int64)
    assert _bytes_beyond_inputs(saved, (h, w, y)) <= n * (4 + 4 + 8)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_reductions_save_the_precomputed_gradients(reduction):
    h, w, y = _problem(64, 16, 300)
    b = torch.randn(300, requires_grad=True)
    _, saved = _saved(lambda: linear_cross_entropy(h, w, y, linear_bias=b, reduction=reduction, chunk_size=8))
    n = h.shape[0]
    gradients = (h.numel() + w.numel() + b.numel()) * 4
    assert _bytes_beyond_inputs(saved, (h, w, b, y)) <= gradients + n * (4 + 4 + 8)


def test_backward_hands_the_precomputed_weight_gradient_over_without_a_copy():
    h, w, y = _problem(64, 16, 300)
    out, saved = _saved(lambda: linear_cross_entropy(h, w, y, chunk_size=8))
    (precomputed,) = [t for t in saved if t.shape == w.shape and _storage(t) != _storage(w)]
    out.backward()
    assert w.grad is not None and _storage(w.grad) == _storage(precomputed)
    assert out.grad_fn.handed_over  # handed over once; a second backward recomputes


def _cpu_allocations(fn) -> tuple[int, int]:
    """(largest single allocation, peak bytes allocated) while ``fn`` runs, from the CPU allocator.

    The allocator's running total also counts live bytes from earlier profiled runs, so the peak is
    taken relative to the total just before the first event.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            events.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.total_allocated))
    events.sort()
    base = events[0][2] - events[0][1]
    return max(size for _, size, _ in events), max(total for _, _, total in events) - base


N, H, V = 256, 16, 2048
LOGITS_BYTES = N * V * 4  # 2 MiB
BUDGET = 128 << 10
BLOCK = 1 << 13


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row-kernel blocks of 32 KiB, so that their temporaries are small next to the budget."""
    monkeypatch.setattr(_layout, "BLOCK_ELEMENTS", BLOCK)


def test_the_measurement_sees_the_naive_logits():
    h, w, y = _problem(N, H, V)
    largest, peak = _cpu_allocations(lambda: TF.cross_entropy(h @ w.t(), y).backward())
    assert largest >= LOGITS_BYTES and peak >= 2 * LOGITS_BYTES


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_no_n_by_v_buffer_and_bounded_peak(reduction, small_blocks):
    h, w, y = _problem(N, H, V)

    def step() -> None:
        out = linear_cross_entropy(h, w, y, reduction=reduction, workspace_bytes=BUDGET)
        out.sum().backward()

    largest, peak = _cpu_allocations(step)
    gradients = (h.numel() + w.numel()) * 4
    blocks = 4 * BLOCK * 4  # a few row-kernel block temporaries
    assert largest <= max(BUDGET, w.numel() * 4)
    assert peak <= gradients + BUDGET + blocks < LOGITS_BYTES // 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_allocated(small_blocks):
    h, w, y = _problem(N, H, V, device="cuda")
    # a first call creates cuBLAS's workspace, which then stays allocated: keep it out of the peak
    warm_h, warm_w = h.detach().requires_grad_(), w.detach().requires_grad_()
    linear_cross_entropy(warm_h, warm_w, y, workspace_bytes=BUDGET).backward()
    del warm_h, warm_w
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    linear_cross_entropy(h, w, y, workspace_bytes=BUDGET).backward()
    torch.cuda.synchronize()
    gradients = (h.numel() + w.numel()) * 4
    blocks = 4 * BLOCK * 4
    assert torch.cuda.max_memory_allocated() - base <= gradients + BUDGET + blocks < LOGITS_BYTES // 4


def test_the_memory_contract_at_full_size():
    """N=2048, H=512, V=32768 float32, forward and backward: at most 100 MB above the inputs.

    The profiler counts every allocation torch makes (the gradients alone are 68 MiB), so the bound
    does not depend on the machine's BLAS or allocator; the harness also measures the RSS growth.
    """
    torch.manual_seed(0)
    h, w, y = _problem(2048, 512, 32768)

    def step() -> None:
        linear_cross_entropy(h, w, y).backward()

    _, peak = _cpu_allocations(step)
    assert peak <= 100e6, f"peak {peak / 2**20:.1f} MiB"
