"""The block walk runs on torch's own threads: any thread count gives the same results, in every autograd
mode, and crossent changes no thread setting."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import torch

import crossent
from crossent.ops import _layout

F64 = torch.float64


@pytest.fixture
def many_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_layout, "BLOCK_ELEMENTS", 64)


def _loss_and_grads(threads: int, x: torch.Tensor, t: torch.Tensor, p: torch.Tensor, w: torch.Tensor):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        ws = w.clone().requires_grad_()
        by_index = crossent.cross_entropy(xs[0], t, w.detach(), label_smoothing=0.1)
        by_probs = crossent.cross_entropy(xs[1], p, ws, reduction="sum")
        bce = crossent.binary_cross_entropy_with_logits(x, p)
        grads = torch.autograd.grad(by_index + by_probs, [*xs, ws])
        return [by_index, by_probs, bce, *grads]
    finally:
        torch.set_num_threads(previous)


def test_threads_change_nothing_bitwise(many_blocks):
    x = torch.randn(37, 11, 3, dtype=F64)
    t = torch.randint(0, 11, (37, 3))
    p = torch.rand(37, 11, 3, dtype=F64)
    w = torch.rand(11, dtype=F64)
    one = _loss_and_grads(1, x, t, p, w)
    two = _loss_and_grads(2, x, t, p, w)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_inference_mode_and_no_grad(many_blocks):
    x = torch.randn(40, 9)
    t = torch.randint(0, 9, (40,))
    expected = crossent.cross_entropy(x, t, reduction="none")
    with torch.inference_mode():
        torch.testing.assert_close(crossent.cross_entropy(x, t, reduction="none"), expected)
        torch.testing.assert_close(crossent.log_softmax(x, 1).exp().sum(1), torch.ones(40))
    with torch.no_grad():
        out = crossent.cross_entropy(x.requires_grad_(), t)
    assert not out.requires_grad


def _child(queue) -> None:
    x = torch.randn(64, 9)
    queue.put(float(crossent.cross_entropy(x, torch.zeros(64, dtype=torch.long))))


def test_thread_settings_are_left_alone(many_blocks):
    before = (torch.get_num_threads(), torch.get_num_interop_threads(), threading.active_count())
    x = torch.randn(300, 9, requires_grad=True)
    crossent.cross_entropy(x, torch.randint(0, 9, (300,))).backward()
    crossent.binary_cross_entropy_with_logits(x, torch.rand(300, 9)).backward()
    assert (torch.get_num_threads(), torch.get_num_interop_threads(), threading.active_count()) == before


def test_a_forked_child_computes(many_blocks):
    crossent.cross_entropy(torch.randn(64, 9), torch.zeros(64, dtype=torch.long))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) > 0
