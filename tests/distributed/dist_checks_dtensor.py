"""Multi-rank checks of DTensor inputs: crossent.cross_entropy on logits sharded by class, and
crossent.linear_cross_entropy with a classifier sharded by vocabulary row, against torch on the full
tensors in float64; the full class weight or this rank's slice in the vocab-parallel losses.

The shards are whatever ``distribute_tensor`` gives (torch's chunking: uneven, even empty, for some
vocabulary sizes); gradients are compared after ``full_tensor()``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_cases import assert_close, assert_same_on_every_rank, case_grid, generator, rank, world
from dist_checks_failures import expect, last, peer_fails
from dist_harness import Check
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

import crossent
from crossent.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
from lm_reference import reference

OPTIONS = {"softcap": 2.5, "temperature": 0.8, "z_loss": 0.1}


@functools.cache
def mesh() -> DeviceMesh:
    return init_device_mesh("cpu", (world(),))


def local_slice(t: torch.Tensor, dim: int) -> torch.Tensor:
    """This rank's slice of ``t`` along ``dim``, as DTensor's ``Shard(dim)`` cuts it."""
    return distribute_tensor(t, mesh(), [Shard(dim)]).to_local()


def leaf(t: torch.Tensor, placements: list[Any], grad: bool = True) -> DTensor:
    return distribute_tensor(t.detach(), mesh(), placements).requires_grad_(grad)


def kind_of_weight(w: torch.Tensor, i: int, cd: int) -> tuple[Any, str]:
    """The class weight as each accepted kind in turn: plain full, plain slice, replicated, sharded DTensor."""
    kinds = ("plain full", "plain slice", "replicated DTensor", "sharded DTensor")
    kind = kinds[i % len(kinds)]
    value = {
        "plain full": lambda: w.clone(),
        "plain slice": lambda: local_slice(w, 0),
        "replicated DTensor": lambda: distribute_tensor(w, mesh(), [Replicate()]),
        "sharded DTensor": lambda: distribute_tensor(w, mesh(), [Shard(0)]),
    }[kind]()
    return value, kind


def check_cross_entropy_grid(pg: dist.ProcessGroup) -> None:
    """Every shape x target kind x weight x smoothing x reduction; weights and targets of every accepted kind."""
    for i, case in enumerate(case_grid([(5, 7), (2, 5, 3), (7,), (3, 2), (0, 7)])):
        x, t, w = case.tensors(torch.float64)
        cd = case.class_dim
        x_full = x.clone().requires_grad_()
        t_full = t.clone().requires_grad_() if case.probability else t
        w_full = w.clone().requires_grad_() if (w is not None and case.probability) else w
        extra = {
            "ignore_index": case.ignore_index,
            "reduction": case.reduction,
            "label_smoothing": case.label_smoothing,
        }
        expected = F.cross_entropy(x_full, t_full, w_full, **extra)  # type: ignore[arg-type]

        dx = leaf(x, [Shard(cd)])
        if case.probability:  # a DTensor sharded like the input, or the full plain tensor
            dt: Any = leaf(t, [Shard(cd)]) if i % 2 else t.clone().requires_grad_()
        else:  # global class ids: plain or replicated
            dt = distribute_tensor(t, mesh(), [Replicate()]) if i % 2 else t
        dw, kind = (None, "none") if w is None else kind_of_weight(w, i // 2, cd)
        if dw is not None and case.probability:
            dw.requires_grad_()
        actual = crossent.cross_entropy(dx, dt, dw, **extra)  # type: ignore[arg-type]
        what = f"{case} weight={kind} target={type(dt).__name__}"
        assert isinstance(actual, DTensor) and actual.placements == (Replicate(),), f"{what}: {actual!r}"
        assert_close(actual.to_local(), expected, 1e-12, f"loss {what}")
        assert_same_on_every_rank(actual.to_local().detach(), f"loss {what}")

        upstream = torch.randn(expected.shape, dtype=torch.float64, generator=generator(case.seed))
        (expected * upstream).sum().backward()
        (actual * distribute_tensor(upstream, mesh(), [Replicate()])).sum().backward()
        assert dx.grad is not None and dx.grad.placements == dx.placements, f"{what}: grad {dx.grad!r}"
        assert_close(dx.grad.full_tensor(), x_full.grad, 1e-12, f"input grad {what}")
        if case.probability:
            # a plain full target is replicated: its gradient comes back whole on every rank
            grad = dt.grad.full_tensor() if isinstance(dt, DTensor) else dt.grad
            assert_close(grad, t_full.grad, 1e-12, f"target grad {what}")
            if dw is not None:
                if isinstance(dw, DTensor):
                    assert dw.grad.placements == dw.placements, f"{what}: weight grad {dw.grad!r}"
                    assert_close(dw.grad.full_tensor(), w_full.grad, 1e-12, f"weight grad {what}")
                elif kind == "plain full":  # each rank's gradient holds its own classes' terms
                    assert_close(summed(dw.grad), w_full.grad, 1e-12, f"weight grad {what}")
                else:
                    assert_close(dw.grad, local_slice(w_full.grad, 0), 1e-12, f"weight grad {what}")


def summed(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t


def check_lm_options(pg: dist.ProcessGroup) -> None:
    """softcap, temperature, z-loss and the statistics: every returned tensor a replicated DTensor."""
    for case in case_grid([(5, 7), (2, 7, 3)]):
        x, t, w = case.tensors(torch.float64)
        x_full = x.clone().requires_grad_()
        extra = {
            "ignore_index": case.ignore_index,
            "reduction": case.reduction,
            "label_smoothing": case.label_smoothing,
        }
        ref = reference(x_full, t, w, **extra, **OPTIONS)  # type: ignore[arg-type]
        dx = leaf(x, [Shard(1)])
        dt = leaf(t, [Shard(1)], grad=False) if case.probability else t
        loss, stats = crossent.cross_entropy(dx, dt, w, **extra, return_stats=True, **OPTIONS)  # type: ignore[arg-type]
        what = f"{case}"
        assert_close(loss.to_local(), ref.loss, 1e-12, f"loss {what}")
        for name in ("lse", "entropy", "z_loss"):
            value = getattr(stats, name)
            assert isinstance(value, DTensor) and value.placements == (Replicate(),), f"{name} {what}: {value!r}"
            assert_close(value.to_local(), getattr(ref, name), 1e-12, f"{name} {what}")
        if case.probability:
            assert stats.accuracy is None
        else:
            assert_close(stats.accuracy.to_local(), ref.accuracy, 0.0, f"accuracy {what}")
        g = generator(case.seed)
        upstream = [torch.randn(r.shape, dtype=torch.float64, generator=g) for r in ref[:3]]
        sum((u * r).sum() for u, r in zip(upstream, ref[:3], strict=True)).backward()
        mine = (loss, stats.lse, stats.entropy)
        replicated = [distribute_tensor(u, mesh(), [Replicate()]) for u in upstream]
        sum((u * r).sum() for u, r in zip(replicated, mine, strict=True)).backward()
        assert_close(dx.grad.full_tensor(), x_full.grad, 1e-12, f"input grad {what}")


def check_linear(pg: dist.ProcessGroup) -> None:
    """The fused linear loss with the classifier sharded by vocabulary row (7, 5 and 2 rows: uneven and
    empty shards), hidden states plain or replicated, bias and class weight of every kind."""
    g = generator(31)
    for i, (vocab, reduction, probability) in enumerate(
        [(7, "mean", False), (5, "none", False), (2, "sum", False), (7, "sum", True), (5, "mean", True)]
    ):
        h = torch.randn(6, 4, dtype=torch.float64, generator=g)
        classifier = torch.randn(vocab, 4, dtype=torch.float64, generator=g)
        bias = torch.randn(vocab, dtype=torch.float64, generator=g)
        w = torch.rand(vocab, dtype=torch.float64, generator=g) + 0.5
        if probability:
            y: torch.Tensor = torch.randn(6, vocab, dtype=torch.float64, generator=g).softmax(1)
        else:
            y = torch.randint(0, vocab, (6,), generator=g)
            y[1] = -100
        h_full, w_full, b_full = (t.clone().requires_grad_() for t in (h, classifier, bias))
        expected = F.cross_entropy(F.linear(h_full, w_full, b_full), y, w, label_smoothing=0.1, reduction=reduction)
        dh: Any = leaf(h, [Replicate()]) if i % 2 else h.clone().requires_grad_()
        dW = leaf(classifier, [Shard(0)])
        db = leaf(bias, [Shard(0)] if i % 2 else [Replicate()])
        dw, kind = kind_of_weight(w, i, 0)
        dy = leaf(y, [Shard(1)], grad=False) if probability and i % 2 else y
        actual = crossent.linear_cross_entropy(
            dh, dW, dy, linear_bias=db, weight=dw, label_smoothing=0.1, reduction=reduction
        )
        what = f"linear V={vocab} {reduction} probability={probability} weight={kind}"
        assert isinstance(actual, DTensor) and actual.placements == (Replicate(),), f"{what}: {actual!r}"
        assert_close(actual.to_local(), expected, 1e-12, f"loss {what}")
        upstream = torch.randn(expected.shape, dtype=torch.float64, generator=g)
        (expected * upstream).sum().backward()
        (actual * distribute_tensor(upstream, mesh(), [Replicate()])).sum().backward()
        assert dW.grad.placements == (Shard(0),) and db.grad.placements == db.placements, what
        assert_close(dW.grad.full_tensor(), w_full.grad, 1e-12, f"weight grad {what}")
        assert_close(db.grad.full_tensor(), b_full.grad, 1e-12, f"bias grad {what}")
        h_grad = dh.grad.full_tensor() if isinstance(dh, DTensor) else dh.grad
        assert_close(h_grad, h_full.grad, 1e-12, f"input grad {what}")


def check_linear_options_and_partial_input_grad(pg: dist.ProcessGroup) -> None:
    """softcap, temperature, z-loss, statistics and a causal shift pass through; with reduce_input_grad=False
    the gradient of replicated hidden states comes back Partial, and sums to torch's."""
    g = generator(32)
    h = torch.randn(2, 5, 4, dtype=torch.float64, generator=g)
    classifier = torch.randn(7, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, 7, (2, 5), generator=g)
    y[0, 2] = -100
    h_full, w_full = h.clone().requires_grad_(), classifier.clone().requires_grad_()
    logits = (h_full @ w_full.T)[:, :-1].transpose(1, 2)
    ref = reference(logits, y[:, 1:], reduction="none", **OPTIONS)  # type: ignore[arg-type]
    (ref.loss.sum() + ref.entropy.sum()).backward()
    for reduce_input_grad in (True, False):
        dh, dW = leaf(h, [Replicate()]), leaf(classifier, [Shard(0)])
        loss, stats = crossent.linear_cross_entropy(
            dh, dW, y, reduction="none", shift=1, return_stats=True, reduce_input_grad=reduce_input_grad, **OPTIONS
        )
        what = f"linear options reduce_input_grad={reduce_input_grad}"
        pad = functools.partial(F.pad, pad=(0, 1))
        assert_close(loss.to_local(), pad(ref.loss), 1e-12, f"loss {what}")
        assert_close(stats.entropy.to_local(), pad(ref.entropy), 1e-12, f"entropy {what}")
        assert_close(stats.accuracy.to_local(), ref.accuracy, 0.0, f"accuracy {what}")
        (loss.sum() + stats.entropy.sum()).backward()
        expected_placement = Replicate() if reduce_input_grad else Partial()
        assert dh.grad.placements == (expected_placement,), f"{what}: {dh.grad.placements}"
        assert_close(dh.grad.full_tensor(), h_full.grad, 1e-12, f"input grad {what}")
        assert_close(dW.grad.full_tensor(), w_full.grad, 1e-12, f"weight grad {what}")


def check_replicated(pg: dist.ProcessGroup) -> None:
    """A DTensor replicated on the mesh is computed locally: a replicated DTensor loss, replicated gradient."""
    x = torch.randn(5, 7, dtype=torch.float64, generator=generator(33))
    y = torch.tensor([0, 6, -100, 3, 2])
    w = torch.rand(7, dtype=torch.float64, generator=generator(34)) + 0.5
    for reduction in ("mean", "none"):
        x_full = x.clone().requires_grad_()
        expected = F.cross_entropy(x_full, y, w, reduction=reduction, label_smoothing=0.2)
        expected.sum().backward()
        for dy, dw in (
            (y, w),
            (distribute_tensor(y, mesh(), [Replicate()]), distribute_tensor(w, mesh(), [Replicate()])),
        ):
            dx = leaf(x, [Replicate()])
            actual = crossent.cross_entropy(dx, dy, dw, reduction=reduction, label_smoothing=0.2)
            assert isinstance(actual, DTensor) and actual.placements == (Replicate(),), repr(actual)
            assert_close(actual.to_local(), expected, 1e-12, f"replicated loss {reduction}")
            actual.sum().backward()
            assert dx.grad.placements == (Replicate(),)
            assert_close(dx.grad.to_local(), x_full.grad, 1e-12, f"replicated grad {reduction}")
    # the focal loss, which the vocab-parallel cross-entropy refuses, runs on replicated logits
    dx = leaf(x, [Replicate()])
    assert_close(crossent.focal_loss(dx, y, gamma=2.0).to_local(), crossent.focal_loss(x, y, gamma=2.0), 1e-12, "focal")
    # the linear loss with everything replicated
    h = torch.randn(5, 3, dtype=torch.float64, generator=generator(35))
    classifier = torch.randn(7, 3, dtype=torch.float64, generator=generator(36))
    actual = crossent.linear_cross_entropy(leaf(h, [Replicate()]), leaf(classifier, [Replicate()]), y)
    assert isinstance(actual, DTensor) and actual.placements == (Replicate(),)
    assert_close(actual.to_local(), F.cross_entropy(h @ classifier.T, y), 1e-12, "replicated linear")


def check_two_dimensional_mesh(pg: dist.ProcessGroup) -> None:
    """A 2-D mesh with the classes sharded on one dimension and replicated on the other; batch sharding refused."""
    x = torch.randn(4, 7, dtype=torch.float64, generator=generator(37))
    y = torch.tensor([0, 6, 3, -100])
    expected = F.cross_entropy(x, y)
    for shape, tp in (((1, world()), 1), ((world(), 1), 0)):
        mesh2 = init_device_mesh("cpu", shape)
        placements: list[Any] = [Replicate(), Replicate()]
        placements[tp] = Shard(1)
        dx = distribute_tensor(x, mesh2, placements).requires_grad_()
        actual = crossent.cross_entropy(dx, y)
        assert actual.placements == (Replicate(), Replicate()), f"{shape}: {actual.placements}"
        assert_close(actual.to_local(), expected, 1e-12, f"2-D mesh {shape}")
        actual.backward()
        assert dx.grad.placements == dx.placements
        x_full = x.clone().requires_grad_()
        F.cross_entropy(x_full, y).backward()
        assert_close(dx.grad.full_tensor(), x_full.grad, 1e-12, f"2-D mesh grad {shape}")
        if shape[1] == world():
            batch = distribute_tensor(x, mesh2, [Shard(0), Shard(1)])
            expect(
                ValueError,
                r"Shard\(dim=0\) on mesh dimension 0 is not supported",
                lambda: crossent.cross_entropy(batch, y),  # noqa: B023
            )


def check_bad_placements(pg: dist.ProcessGroup) -> None:
    """Placements the loss does not take raise ValueError naming them, on every rank, before any collective."""
    x = torch.randn(6, 7, dtype=torch.float64, generator=generator(38))
    y = torch.tensor([0, 6, 3, -100, 1, 2])
    m = mesh()
    batch = distribute_tensor(x, m, [Shard(0)])
    expect(
        ValueError,
        r"class dimension 1 \(Shard\(1\)\).*Shard\(dim=0\) on mesh dimension 0",
        lambda: crossent.cross_entropy(batch, y),  # noqa: B023
    )
    partial = DTensor.from_local(x, m, [Partial()], run_check=False)
    expect(
        ValueError, r"Partial\(sum\) on mesh dimension 0 is not supported", lambda: crossent.cross_entropy(partial, y)
    )
    logits = distribute_tensor(x, m, [Shard(1)])
    sharded_y = distribute_tensor(y, m, [Shard(0)])
    expect(
        ValueError,
        r"target \(class indices\) must have placements \(Replicate\(\)\), got \(Shard\(dim=0\)\)",
        lambda: crossent.cross_entropy(logits, sharded_y),
    )
    expect(ValueError, "pass no process_group", lambda: crossent.cross_entropy(logits, y, process_group=pg))
    expect(ValueError, "neither inplace_backward", lambda: crossent.cross_entropy(logits, y, inplace_backward=True))
    h = torch.randn(6, 3, dtype=torch.float64, generator=generator(39))
    columns = distribute_tensor(torch.randn(7, 3, dtype=torch.float64), m, [Shard(1)])
    expect(
        ValueError,
        r"linear_weight must be sharded on its class dimension 0.*Shard\(dim=1\)",
        lambda: crossent.linear_cross_entropy(h, columns, y),
    )
    rows = distribute_tensor(torch.randn(7, 3, dtype=torch.float64), m, [Shard(0)])
    sequence = distribute_tensor(h, m, [Shard(0)])
    expect(
        ValueError,
        r"input \(hidden states\) must have placements \(Replicate\(\)\), got \(Shard\(dim=0\)\)",
        lambda: crossent.linear_cross_entropy(sequence, rows, y),
    )
    expect(
        ValueError,
        r"a DTensor input \(hidden states\) must be replicated",
        lambda: crossent.linear_cross_entropy(sequence, h.new_ones(7, 3), y),
    )


def check_permuted_mesh(pg: dist.ProcessGroup) -> None:
    """A mesh whose ranks are not in increasing order: DTensor's shard order is not the group's rank order,
    which the vocab-parallel loss follows; refused rather than silently wrong."""
    permuted = DeviceMesh("cpu", list(reversed(range(world()))))
    logits = distribute_tensor(torch.randn(4, 7, dtype=torch.float64, generator=generator(45)), permuted, [Shard(1)])
    y = torch.tensor([0, 6, 3, 2])
    expect(ValueError, r"not in increasing order .* \(mesh \[(2, )?1, 0\]\)", lambda: crossent.cross_entropy(logits, y))


def check_collectives(pg: dist.ProcessGroup) -> None:
    """The DTensor entry adds no collective to the vocab-parallel loss's three (none in the backward)."""
    calls: list[str] = []
    original = dist.all_reduce

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(str(kwargs.get("op")).split(".")[-1])
        return original(*args, **kwargs)  # type: ignore[arg-type]

    x = torch.randn(4, 7, dtype=torch.float64, generator=generator(40))
    dx = leaf(x, [Shard(1)])
    w = torch.rand(7, dtype=torch.float64) + 0.5
    try:
        dist.all_reduce = spy  # type: ignore[assignment]
        loss = crossent.cross_entropy(dx, torch.tensor([0, 3, 6, -100]), w, label_smoothing=0.1)
        forward = list(calls)
        calls.clear()
        loss.backward()
    finally:
        dist.all_reduce = original
    assert forward == ["MAX", "MAX", "SUM"], forward
    assert calls == [], calls


# ---- the vocab-parallel losses take the full class weight or this rank's slice (no DTensor)


def widths_of(vocab: int) -> list[int]:
    return [len(c) for c in torch.arange(vocab).chunk(world())] + [0] * (
        world() - len(torch.arange(vocab).chunk(world()))
    )


def check_full_or_sliced_weight(pg: dist.ProcessGroup) -> None:
    """vocab_parallel_cross_entropy and the linear loss: the full (V,) weight equals this rank's slice,
    values and gradients (probability targets give the weight a gradient), uneven and empty shards."""
    for vocab in (7, 2):
        widths = widths_of(vocab)
        start = sum(widths[: rank()])
        g = generator(41 + vocab)
        x = torch.randn(5, vocab, 2, dtype=torch.float64, generator=g)
        w = torch.rand(vocab, dtype=torch.float64, generator=g) + 0.5
        p = torch.randn(5, vocab, 2, dtype=torch.float64, generator=g).softmax(1)
        y = torch.randint(0, vocab, (5, 2), generator=g)
        for target in (y, p):
            x_local = x[:, start : start + widths[rank()]]
            t_local = target if target is y else p[:, start : start + widths[rank()]]
            sliced = w[start : start + widths[rank()]].clone().requires_grad_(target is p)
            full = w.clone().requires_grad_(target is p)
            a = vocab_parallel_cross_entropy(x_local, t_local, sliced, label_smoothing=0.1, process_group=pg)
            b = vocab_parallel_cross_entropy(x_local, t_local, full, label_smoothing=0.1, process_group=pg)
            assert_close(b, a, 0.0, f"full weight V={vocab}")
            assert_close(
                b, F.cross_entropy(x, target, w, label_smoothing=0.1), 1e-12, f"full weight vs torch V={vocab}"
            )
            if target is p:
                a.backward()
                b.backward()
                expected = torch.zeros_like(w)
                expected[start : start + widths[rank()]] = sliced.grad
                assert_close(full.grad, expected, 0.0, f"full weight grad V={vocab}")
        h = torch.randn(5, 3, dtype=torch.float64, generator=g)
        classifier = torch.randn(vocab, 3, dtype=torch.float64, generator=g)
        rows = classifier[start : start + widths[rank()]]
        labels = y[:, 0]
        a = vocab_parallel_linear_cross_entropy(
            h, rows, labels, weight=w[start : start + widths[rank()]], process_group=pg
        )
        b = vocab_parallel_linear_cross_entropy(h, rows, labels, weight=w, process_group=pg)
        assert_close(b, a, 0.0, f"linear full weight V={vocab}")
        assert_close(b, F.cross_entropy(h @ classifier.T, labels, w), 1e-12, f"linear full weight vs torch V={vocab}")


def check_weight_of_another_length(pg: dist.ProcessGroup) -> None:
    """A weight that is neither the slice nor the full vector: RuntimeError naming both lengths on that rank,
    PeerError on the others; a length that is wrong on every rank fails every rank with RuntimeError."""
    widths = widths_of(7)
    x = torch.randn(4, 7, dtype=torch.float64, generator=generator(43))
    start = sum(widths[: rank()])
    x_local = x[:, start : start + widths[rank()]]
    y = torch.tensor([0, 6, 3, 1])
    pattern = (
        rf"slice of the class weights, of shape \[{widths[-1]}\], or the weights of all 7 classes, of shape \[7\], "
        r"but got weight tensor of shape: \[8\]"
    )
    weight = torch.ones(8 if last() else 7, dtype=torch.float64)
    peer_fails(RuntimeError, pattern, lambda: vocab_parallel_cross_entropy(x_local, y, weight, process_group=pg))
    h = torch.randn(4, 3, dtype=torch.float64, generator=generator(44))
    rows = torch.randn(widths[rank()], 3, dtype=torch.float64)
    call = lambda: vocab_parallel_linear_cross_entropy(h, rows, y, weight=weight, process_group=pg)  # noqa: E731
    peer_fails(RuntimeError, pattern, call)
    two_d = torch.ones(1, 7, dtype=torch.float64)
    expect(
        RuntimeError,
        r"of shape \[7\], but got weight tensor of shape: \[1, 7\]",
        lambda: vocab_parallel_cross_entropy(x_local, y, two_d, process_group=pg),
    )
    # the group is still in step
    assert torch.isfinite(
        vocab_parallel_cross_entropy(x_local, y, torch.ones(7, dtype=torch.float64), process_group=pg)
    )


def checks() -> list[tuple[str, Check]]:
    return [
        (f.__name__, f)
        for f in (
            check_cross_entropy_grid,
            check_lm_options,
            check_linear,
            check_linear_options_and_partial_input_grad,
            check_replicated,
            check_two_dimensional_mesh,
            check_bad_placements,
            check_permuted_mesh,
            check_collectives,
            check_full_or_sliced_weight,
            check_weight_of_another_length,
        )
    ]
