"""Vocab-parallel linear cross-entropy: the classifier ``linear_weight`` is sharded by rows (classes).

Rank r holds ``W[V_r] (V_r, H)`` and ``b[V_r]``; the hidden states ``h (N, H)`` are the same on every
rank. The forward runs the fused pass (``crossent.fused._function.fused_pass``) over this rank's
logits ``h @ W[V_r].T + b[V_r]`` a chunk of rows at a time (never all ``N x V_r`` at once) for the
shard's statistics, then the engine's collective ``combine`` (the same two collectives as
``vocab_parallel_cross_entropy``; the agreement exchange before ``apply`` told each rank where its
classes start).

The backward runs the pass again with the combined statistics and forms this rank's
``dW[V_r] = G.T @ h``, ``db[V_r] = sum_n G`` (complete: the shard's classes see every row) and its
share of the input gradient, ``dh_r = G @ W[V_r]``. The input gradient is the sum of the shares over
ranks: with ``reduce_input_grad=True`` one all-reduce SUM of ``N x H`` values (float32, or float64)
makes it whole on every rank; with False each rank returns its share and the caller's framework
(e.g. Megatron's column-parallel linear, whose backward already all-reduces its input gradient)
must sum it. Reducing in both places would multiply the gradient by the group size. That all-reduce
carries one flag per rank too: a rank asked for a double backward (``create_graph=True``, which the
first-order backward refuses) still joins it with its flag raised, so its peers raise
``PeerError`` instead of waiting for it.

Collectives run inside ``forward`` and ``backward`` of this autograd Function, on buffers outside any
graph: ``torch.distributed.all_reduce`` has no autograd formula, so a plain all-reduce inside a
differentiable graph would silently give each rank only its own gradient terms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from crossent import _engine
from crossent._reduction import divisor, reduce, upstream
from crossent.distributed import _peers
from crossent.distributed._group import Group
from crossent.fused._chunks import Projection
from crossent.fused._function import Wanted, fused_pass
from crossent.fused._options import FusedOptions
from crossent.ops._autograd import first_order
from crossent.ops.cross_entropy import Shard, make_kind

CALLER = "vocab_parallel_linear_cross_entropy"
REFUSED = "refused the backward: double backward (create_graph=True) is not supported"


class VocabParallelLinearCrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of ``h @ W.T + b`` with ``W``, ``b`` sharded by class; class indices or probabilities.

    ``target`` is ``(N,)`` class ids or ``(N, V_r)`` probabilities; the output is ``(N, 1)`` for ``'none'``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        normalizer: torch.Tensor | float | None,
        opts: FusedOptions,
        group: Group,
        shard: Shard,
        reduce_input_grad: bool,
    ) -> torch.Tensor:
        n, c = h.shape[0], w.shape[0]
        kind, out_dtype = make_kind(h.dtype, _targets(target, n, c), weight, opts.call, c, shard)
        stats = fused_pass(Projection(h, w, b), kind, opts, None).stats
        assert stats is not None
        kind, stats = kind.combine(stats, shard.group)
        mode, div = opts.call.reduction, divisor(normalizer, kind.acc)
        if div is None and mode == "mean":
            div = kind.mean_divisor(stats)
        if div is not None:
            mode = "mean"
        ctx.kind, ctx.mode, ctx.div, ctx.opts, ctx.group = kind, mode, div, opts, group
        # every rank joins the input-gradient all-reduce (the ranks agreed on both in the forward)
        ctx.sums_input_grad = reduce_input_grad and ctx.needs_input_grad[0]
        ctx.save_for_backward(h, w, b, target, weight, *_engine.for_backward(stats))
        return reduce(kind.loss(stats), mode, div).to(out_dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled() and ctx.sums_input_grad:
            # _backward refuses a double backward; first join the peers' input-gradient all-reduce
            _sum_input_grad(None, ctx, refused=True)
        return _backward(ctx, grad_output)


def _targets(target: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """The engine's view of the targets: ``(N, 1)`` ids or ``(N, V_r, 1)`` probabilities."""
    return target.reshape(n, c, 1) if target.is_floating_point() else target.reshape(n, 1)


def _sum_input_grad(share: torch.Tensor | None, ctx: Any, refused: bool) -> torch.Tensor:
    """All-reduce SUM this rank's input-gradient share (zeros when refused) in the accumulation dtype,
    with one flag per rank after it; raise on every rank if any rank refused."""
    h, group = ctx.saved_tensors[0], ctx.group
    buffer = torch.zeros(h.numel() + group.size, dtype=ctx.kind.acc, device=h.device)
    if share is not None:
        buffer[: h.numel()].view(h.shape).copy_(share)
    buffer[h.numel() + group.rank] = float(refused)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group.handle)
    if not refused:
        _peers.check_peers(buffer[h.numel() :], CALLER, REFUSED)
    return buffer[: h.numel()].view(h.shape)


@first_order
def _backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    h, w, b, target, weight, *fields = ctx.saved_tensors
    kind: _engine.Kind = ctx.kind
    stats = _engine.from_saved(*fields)
    coef = upstream(grad_output.to(kind.acc), ctx.mode, ctx.div, (h.shape[0], 1))
    wanted = Wanted(*ctx.needs_input_grad[:5])
    r = fused_pass(Projection(h, w, b), kind, ctx.opts, None, stats=stats, coef=coef, wanted=wanted)
    grad_h = _sum_input_grad(r.input, ctx, refused=False) if ctx.sums_input_grad else r.input
    grads = zip((grad_h, r.weight, r.bias, r.target, r.class_weight), (h, w, b, target, weight), strict=True)
    return *(g.to(t.dtype).reshape(t.shape) if g is not None else None for g, t in grads), *[None] * 5
