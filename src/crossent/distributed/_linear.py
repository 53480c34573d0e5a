"""Vocab-parallel linear cross-entropy: the classifier ``linear_weight`` is sharded by rows (classes).

Rank r holds ``W[V_r] (V_r, H)`` and ``b[V_r]``; the hidden states ``h (N, H)`` are the same on every
rank. The forward computes this rank's logits ``h @ W[V_r].T + b[V_r]`` a chunk of rows at a time
(never all ``N x V_r`` at once), feeds each chunk to the head (``_heads``), and makes the same two
collectives as ``vocab_parallel_cross_entropy``. The target logit comes from the owning rank as one
row-wise dot product ``h_n . W[y_n] + b[y_n]``; the agreement exchange (``_consensus``, before
``apply``) told each rank where its classes start.

The backward recomputes each chunk's logits and gradient ``G`` and forms this rank's
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

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from crossent.distributed import _peers
from crossent.distributed._consensus import Layout
from crossent.distributed._group import Group
from crossent.distributed._heads import ClassIndexHead, Head, ProbabilityHead
from crossent.distributed._logits import reduce_loss, upstream
from crossent.distributed._validate import CrossEntropySpec
from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype

CALLER = "vocab_parallel_linear_cross_entropy"
REFUSED = "refused the backward: double backward (create_graph=True) is not supported"
# rows per chunk default to a 32 MiB budget for the chunk's logits, their float32 copy and gradient
WORKSPACE_BYTES = 32 << 20


@dataclass(frozen=True)
class LinearPlan:
    chunk_rows: int
    reduce_input_grad: bool
    output_shape: tuple[int, ...]


def default_chunk_rows(rows: int, classes: int, dtype: torch.dtype) -> int:
    per_row = max(classes, 1) * (dtype.itemsize + 2 * 8)
    return max(1, min(rows, WORKSPACE_BYTES // per_row))


def _chunks(n: int, rows: int) -> list[slice]:
    return [slice(r0, min(r0 + rows, n)) for r0 in range(0, n, rows)]


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``h @ w.T + b`` in the input dtype, as ``torch.nn.functional.linear`` computes it."""
    return torch.addmm(b, h, w.T) if b is not None else h @ w.T


def _target_logits(
    h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, local: torch.Tensor, rows: int
) -> torch.Tensor:
    """``h_n . w[local_n] + b[local_n]`` for every row (meaningful where this rank owns the target)."""
    out = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
    for bn in _chunks(h.shape[0], rows):
        picked = w[local[bn]]  # (rows, H): one classifier row per hidden row
        dots = torch.bmm(h[bn].unsqueeze(1), picked.unsqueeze(2)).view(-1)
        out[bn] = dots + b[local[bn]] if b is not None else dots
    return out


class VocabParallelLinearCrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of ``h @ W.T + b`` with ``W``, ``b`` sharded by class; class indices or probabilities."""

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        normalizer: torch.Tensor | float | None,
        spec: CrossEntropySpec,
        group: Group,
        layout: Layout,
        plan: LinearPlan,
        wants_input_grad: bool,
    ) -> torch.Tensor:
        n, c = h.shape[0], w.shape[0]
        head: Head
        if spec.probability:
            dtypes = (h.dtype, target.dtype) + ((weight.dtype,) if weight is not None else ())
            acc = accumulation_dtype(*dtypes)
            out_dtype = h.dtype
            for dt in dtypes[1:]:
                out_dtype = torch.promote_types(out_dtype, dt)
            head = ProbabilityHead(spec, target.view(n, c, 1), weight, acc)
        else:
            acc, out_dtype = accumulation_dtype(h.dtype), h.dtype
            head = ClassIndexHead(spec, target.view(n, 1), weight, c, acc)

        for bn in _chunks(n, plan.chunk_rows) if c > 0 else ():
            head.absorb(_logits(h[bn], w, b).to(acc).unsqueeze(2), bn, slice(0, 1))
        target_logit = None
        if isinstance(head, ClassIndexHead) and c > 0:
            _, local = head.locate(layout)
            target_logit = _target_logits(h, w, b, local[:, 0], plan.chunk_rows).to(acc).unsqueeze(1)
        elif isinstance(head, ClassIndexHead):
            head.locate(layout)
        per_position = head.reduce(layout, target_logit, group)
        out, divisor = reduce_loss(per_position, head, spec, normalizer, out_dtype, plan.output_shape)

        ctx.head, ctx.spec, ctx.divisor, ctx.group, ctx.plan = head, spec, divisor, group, plan
        ctx.wants_input_grad = wants_input_grad
        ctx.save_for_backward(h, w, b, target, weight)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled() and _sums_input_grad(ctx):
            # _backward refuses a double backward; first join the peers' input-gradient all-reduce
            buffer, _ = _input_grad_buffer(ctx)
            _sum_input_grad(buffer, ctx.group, refused=True)
        return _backward(ctx, grad_output)


def _sums_input_grad(ctx: Any) -> bool:
    """Whether the backward all-reduces the input gradient (the ranks agreed on it in the forward)."""
    return bool(ctx.wants_input_grad and ctx.plan.reduce_input_grad)


def _input_grad_buffer(ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(buffer, grad_h)``: the input gradient's zero ``(N, H)`` accumulator is a view of ``buffer``,
    followed by one flag per rank when the backward all-reduces it."""
    h = ctx.saved_tensors[0]
    n, hidden = h.shape
    flags = ctx.group.size if _sums_input_grad(ctx) else 0
    buffer = torch.zeros(n * hidden + flags, dtype=ctx.head.acc, device=h.device)
    return buffer, buffer[: n * hidden].view(n, hidden)


def _sum_input_grad(buffer: torch.Tensor, group: Group, refused: bool) -> None:
    """All-reduce SUM the input gradient with this rank's flag; raise on every rank if any rank refused."""
    flags = buffer[buffer.numel() - group.size :]
    flags[group.rank] = float(refused)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group.handle)
    if not refused:
        _peers.check_peers(flags, CALLER, REFUSED)


@first_order
def _backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    h, w, b, target, weight = ctx.saved_tensors
    head: Head = ctx.head
    plan: LinearPlan = ctx.plan
    n, c = h.shape[0], w.shape[0]
    acc = head.acc
    probability = ctx.spec.probability
    head.set_upstream(
        upstream(grad_output, ctx.spec, ctx.divisor, n, 1, acc), target.view(n, c, 1) if probability else None
    )
    need_h, need_w, need_b, need_t, need_cw = ctx.needs_input_grad[:5]
    # every rank joins the input-gradient all-reduce (the forward checked they agree on it)
    buffer, grad_h = _input_grad_buffer(ctx) if ctx.wants_input_grad else (None, None)
    grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
    grad_b = torch.zeros(c, dtype=acc, device=w.device) if need_b else None
    grad_t = torch.empty(target.shape, dtype=target.dtype, device=target.device) if need_t else None
    grad_cw = torch.zeros(c, dtype=acc, device=w.device) if need_cw else None
    for bn in _chunks(n, plan.chunk_rows) if c > 0 else ():
        gx, gt, gcw = head.grad_block(_logits(h[bn], w, b).to(acc).unsqueeze(2), bn, slice(0, 1))
        g = gx.squeeze(2)  # (rows, V_r): d loss / d logits of the chunk
        gm = g.to(h.dtype)  # matmuls in the input dtype, accumulated in acc across chunks
        if grad_h is not None:
            grad_h[bn] = gm @ w
        if grad_w is not None:
            grad_w += gm.T @ h[bn]
        if grad_b is not None:
            grad_b += g.sum(0)
        if grad_t is not None and gt is not None:
            grad_t[bn] = gt.squeeze(2)
        if grad_cw is not None and gcw is not None:
            grad_cw += gcw
    if buffer is not None and _sums_input_grad(ctx):
        _sum_input_grad(buffer, ctx.group, refused=False)
    return (
        grad_h.to(h.dtype) if grad_h is not None and need_h else None,
        grad_w.to(w.dtype) if grad_w is not None else None,
        grad_b.to(b.dtype) if grad_b is not None else None,
        grad_t,
        grad_cw.to(weight.dtype) if grad_cw is not None else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )
