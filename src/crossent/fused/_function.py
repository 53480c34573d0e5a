"""The fused pass over row chunks, and the autograd Function that runs it.

One pass walks the rows a chunk at a time: ``logits = h_c @ W.T + b`` into a reused workspace, the
chunk's statistics from the cross-entropy engine (``crossent._engine``), then (when gradients are
wanted) the logits gradient ``G_c`` in place of the logits, ``dH_c = G_c @ W``, ``dW += G_c.T @ h_c``
and ``db += sum_rows G_c``. No tensor with one value per (row, class) outlives its chunk. On the
Triton path (``FusedOptions.backend``) the same walk hands each chunk's logits, in their own dtype,
to one kernel pass (``crossent.triton.linear_cross_entropy.walk_chunks``) that forms the loss and
writes ``G_c`` over them; the matmuls and the gradient plumbing are the same.

A chunk holds whole rows, so its statistics are final when the classes are not sharded: then
``'mean'`` and ``'sum'`` form the gradients in the forward's pass, for an upstream gradient of 1,
and the backward only rescales them (``_autograd.hand_over``). ``'none'`` (each row has its own
upstream gradient) and vocab shards (whose statistics need a collective first) save the inputs and
the O(N) statistics, and the backward runs the pass again with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from crossent import _engine
from crossent._engine import Kind, Side, Statistics
from crossent._reduction import output
from crossent.fused._chunks import Projection, RowChunk, add_weight_grad, row_chunks
from crossent.fused._options import FusedOptions
from crossent.ops._autograd import first_order, hand_over, save_scalars, saved_scalars
from crossent.ops._layout import accumulation_dtype
from crossent.ops.cross_entropy import make_kind, mark_outputs, outputs, side_divisor, side_gradients, upstreams


@dataclass(frozen=True)
class Wanted:
    """Which gradients to compute, in the order of the Function's inputs."""

    input: bool = False
    weight: bool = False
    bias: bool = False
    target: bool = False
    class_weight: bool = False


class PassResult(NamedTuple):
    stats: Statistics | None  # this shard's statistics of every position (None when they were given)
    input: torch.Tensor | None  # (N, H), input dtype
    weight: torch.Tensor | None  # (V, H), opts.grad_dtype
    bias: torch.Tensor | None  # (V,), opts.grad_dtype
    target: torch.Tensor | None  # (N, C, S) probabilities' gradient
    class_weight: torch.Tensor | None  # (C,), accumulation dtype
    loss: torch.Tensor | None = None  # (N, S): each position's loss, when a kernel formed it (Triton)


def kept_rows(kind: Kind, opts: FusedOptions) -> torch.Tensor | None:
    """Row numbers with at least one kept target (None: every row), when ignored rows are dropped."""
    if not opts.drop_ignored or not isinstance(kind, _engine.ClassIndex):
        return None
    rows = kind.keep.any(1).nonzero().squeeze(1)  # reads the mask: eager mode only
    return None if rows.shape[0] == kind.keep.shape[0] else rows


def fused_pass(
    proj: Projection,
    kind: Kind,
    opts: FusedOptions,
    kept: torch.Tensor | None,
    *,
    stats: Statistics | None = None,
    coef: torch.Tensor | None = None,
    side: Side | None = None,
    wanted: Wanted = Wanted(),
) -> PassResult:
    """One walk over the row chunks.

    Without ``stats`` it absorbs every chunk and returns this shard's statistics; with ``coef``
    (``d output / d l_n``, 0-dim or per position) it also forms the ``wanted`` gradients, from each
    chunk's own statistics when ``stats`` are not given (they must then be final: no shards), else
    from ``stats``. Rows outside ``kept`` get zero gradient.
    """
    h, w = proj.input, proj.weight
    (n, s), v, c = kind.positions, w.shape[0], opts.num_classes  # n <= h's rows: a shift leaves the last out
    acc, device = kind.acc, h.device
    grads = coef is not None
    probability = isinstance(kind, _engine.Probability)
    result = PassResult(
        stats=None,
        input=torch.zeros_like(h) if grads and wanted.input else None,
        weight=torch.zeros(w.shape, dtype=opts.grad_dtype, device=device) if grads and wanted.weight else None,
        bias=torch.zeros(v, dtype=opts.grad_dtype, device=device) if grads and wanted.bias else None,
        target=torch.zeros_like(kind.target) if grads and probability and wanted.target else None,  # type: ignore[union-attr]
        class_weight=torch.zeros(c, dtype=acc, device=device) if grads and wanted.class_weight else None,
    )
    logits_grad = grads and (wanted.input or wanted.weight or wanted.bias)
    # the target gradients read the logits again after the statistics: keep them intact
    overwrite = not (result.target is not None or result.class_weight is not None)
    triton = opts.backend == "triton"  # the dispatcher sends no side terms nor target gradients there
    assert not triton or (side is None and overwrite)
    rows_max = min(opts.chunk_rows, max(n, 1))
    workspace = h.new_empty(rows_max, v)
    chunk: list[tuple[RowChunk, torch.Tensor]] = []  # the chunk being walked: its rows and hidden states

    def blocks() -> Iterator[tuple[_engine.Block, torch.Tensor, torch.Tensor | None]]:
        for rows in row_chunks(n, kept, rows_max) if c > 0 else ():
            hidden = rows.take(h)
            r = hidden.shape[0]
            chunk[:] = [(rows, hidden)]
            logits = proj.logits(hidden, workspace[:r]).view(r, c, s)
            xb = logits if triton else logits.to(acc)  # the kernel reads the logits in their own dtype
            yield (rows.rows, slice(None)), xb, xb if overwrite else None

    def put(block: _engine.Block, grad: torch.Tensor) -> None:
        rows, hidden = chunk[0]
        g = grad.view(hidden.shape[0], v)
        if result.input is not None:
            rows.put(result.input, proj.input_grad(g))
        if result.weight is not None:
            # dW accumulates across chunks in grad_dtype (float32 for half inputs): bf16 sums diverge
            add_weight_grad(result.weight, g, hidden)
        if result.bias is not None:
            result.bias.add_(g.sum(0, dtype=accumulation_dtype(g.dtype)))

    def put_target(block: _engine.Block, gt: torch.Tensor, gw: torch.Tensor) -> None:
        if result.target is not None:
            chunk[0][0].put(result.target, gt)
        if result.class_weight is not None:
            result.class_weight.add_(gw)

    if triton:
        from crossent.triton.linear_cross_entropy import walk_chunks

        chunk_stats, loss = walk_chunks(kind, blocks(), coef=coef, grad=put if logits_grad else None)
        return result._replace(stats=chunk_stats if stats is None else None, loss=loss)
    walked = _engine.walk(
        kind,
        blocks(),
        stats=stats,
        coef=coef,
        side=side,
        grad=put if logits_grad else None,
        target_grads=None if overwrite else put_target,
    )
    return result._replace(stats=walked)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """``loss = cross_entropy(input @ weight.T + bias, target)`` over row chunks, with its own backward.

    Inputs are already flat: ``input (N, H)``, ``weight (C * S, H)``, ``bias (C * S,)``, ``target``
    ``(N, S)`` class indices or ``(N, C, S)`` probabilities. The output is ``(N, S)`` for ``'none'``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        target: torch.Tensor,
        class_weight: torch.Tensor | None,
        normalizer: torch.Tensor | float | None,
        opts: FusedOptions,
        valid: torch.Tensor | None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        kind, out_dtype = make_kind(
            opts.logits_dtype, target, class_weight, opts.call, opts.num_classes, None, valid=valid
        )
        kept = kept_rows(kind, opts)
        mode, div = output(opts.call.reduction, normalizer, kind.acc, kind.mean_divisor)
        side_div = side_divisor(kind, mode, normalizer)
        wanted = Wanted(*ctx.needs_input_grad[:5])
        coef, side = None, None
        if mode != "none" and opts.call.gradient_expected:
            coef, side = upstreams(kind.options, kind.acc, (None,), mode, div, side_div, (), h.device, unit=True)
        result = fused_pass(Projection(h, w, b), kind, opts, kept, coef=coef, side=side, wanted=wanted)
        stats = result.stats
        assert stats is not None
        precomputed = as_inputs(result, (h, w, b, target, class_weight))
        ctx.mode, ctx.opts = mode, opts
        inputs = (h, w, b, target, class_weight, kept, valid, *save_scalars(ctx, div, side_div))
        ctx.save_for_backward(
            *inputs, *_engine.for_backward(stats, kind.options), *(precomputed if coef is not None else ())
        )
        results = outputs(kind, stats, mode, div, side_div, tuple(stats.shift.shape), out_dtype, result.loss)
        mark_outputs(ctx, results)
        return results if len(results) > 1 else results[0]

    @staticmethod
    @first_order
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        opts: FusedOptions = ctx.opts
        h, w, b, target, class_weight, kept, valid, saved_divisor, saved_side_div, *fields = ctx.saved_tensors
        stats_fields, precomputed = fields[: _engine.SAVED_FIELDS], fields[_engine.SAVED_FIELDS :]
        nothing = (None,) * 8
        if all(g is None for g in grads):
            return nothing
        if precomputed and not side_gradients(grads) and grads[0] is not None:
            handed = hand_over(ctx, precomputed, grads[0])
            if handed is not None:
                return (*handed, None, None, None)
        # 'none', a second backward through a retained graph, or gradients of the side outputs:
        # run the pass again from the inputs
        kind, _ = make_kind(opts.logits_dtype, target, class_weight, opts.call, opts.num_classes, None, valid=valid)
        stats = _engine.from_saved(*stats_fields)
        div, side_div = saved_scalars(ctx, [saved_divisor, saved_side_div])
        coef, side = upstreams(
            kind.options, kind.acc, grads, ctx.mode, div, side_div, tuple(stats.shift.shape), h.device
        )
        wanted = Wanted(*ctx.needs_input_grad[:5])
        r = fused_pass(Projection(h, w, b), kind, opts, kept, stats=stats, coef=coef, side=side, wanted=wanted)
        return (*as_inputs(r, (h, w, b, target, class_weight)), None, None, None)


def as_inputs(result: PassResult, inputs: tuple[torch.Tensor | None, ...]) -> list[torch.Tensor | None]:
    """The pass's gradients in the dtypes and shapes of the inputs they belong to."""
    grads = (result.input, result.weight, result.bias, result.target, result.class_weight)
    return [
        g.to(t.dtype).reshape(t.shape) if g is not None and t is not None else g
        for g, t in zip(grads, inputs, strict=True)
    ]
