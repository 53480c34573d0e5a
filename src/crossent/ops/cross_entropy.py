"""Cross-entropy on logits: the engine (``crossent._engine``) driven over cache-sized blocks of the logits.

The forward reads each block once: its statistics, and (when a gradient is expected and nothing
else needs one) the gradient for an upstream gradient of 1, formed from the block's own
exponentials while they are in cache. The backward then only rescales that gradient
(``_autograd.hand_over``). Otherwise (``inplace_backward=True``, vocab shards, probability targets
whose target or weight needs a gradient, a retained graph's second backward) the backward
recomputes ``exp(x - k)`` block by block from the saved statistics and writes the gradient once,
into a fresh buffer or into the logits' own storage.

Across vocab shards (``shard``), the same driver combines the statistics with two collectives
between the forward's block walk and the loss; the backward is local.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from crossent import _engine
from crossent._engine import Kind, LogitOptions, Side, Statistics
from crossent._reduction import Reduction, divisor, output, reduce, upstream
from crossent.ops._autograd import first_order, hand_over, reuse, save_scalars, saved_scalars
from crossent.ops._layout import (
    WORKING_SET_BYTES_PER_ELEMENT,
    accumulation_dtype,
    as_ncs,
    as_rows,
    blocks,
    class_dim,
    output_shape,
    result_dtype,
)


@dataclass(frozen=True)
class CrossEntropyCall:
    """A validated cross-entropy call, apart from its tensors."""

    reduction: Reduction
    ignore_index: int = -100
    label_smoothing: float = 0.0  # clipped to [0, 1]
    probability: bool = False  # class-probability targets of the logits' shape
    inplace_backward: bool = False
    gradient_expected: bool = False  # grad mode on and the logits require grad: the forward forms it
    native: bool = False  # rows (N, C) on the native kernels (``crossent.native``), not the block walk
    options: LogitOptions = LogitOptions()  # softcap, temperature, z-loss and the statistics of ``return_stats``
    loss_dtype: torch.dtype | None = None  # the loss's dtype, when not the logits' (nor the targets')


@dataclass(frozen=True)
class Shard:
    """Where a vocab shard sits: its group, its first class id and the global class count (0-dim tensors)."""

    group: Any
    offset: torch.Tensor
    num_classes: torch.Tensor


def make_kind(
    x_dtype: torch.dtype,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    call: CrossEntropyCall,
    classes: int,
    shard: Shard | None,
    weight_sum: torch.Tensor | float | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[Kind, torch.dtype]:
    """The engine's view of the targets (``(N, S)`` ids or ``(N, C, S)`` probabilities) and the output dtype.

    ``weight_sum``: the class-weight sum of every shard, as ``combine`` found it (for a backward);
    ``valid``: the positions that may count at all (class indices).
    """
    num_classes = shard.num_classes if shard is not None else None
    if call.probability:
        dtypes = (x_dtype, target.dtype, *((weight.dtype,) if weight is not None else ()))
        acc = accumulation_dtype(*dtypes)
        probability = _engine.Probability.build(target, weight, call.label_smoothing, acc, num_classes, call.options)
        return probability, call.loss_dtype or result_dtype(*dtypes)
    offset = shard.offset if shard is not None else None
    acc = accumulation_dtype(x_dtype)
    kind = _engine.ClassIndex.build(
        target, weight, call.ignore_index, call.label_smoothing, classes, acc, offset, num_classes, call.options, valid
    )
    return (
        kind if weight_sum is None else dataclasses.replace(kind, weight_sum=weight_sum)
    ), call.loss_dtype or x_dtype


# a per-class focal or poly-1 loss's block also holds log p, p, 1 - p, (1 - p)^gamma, f and the slopes
_PER_CLASS_WORKING_SET = WORKING_SET_BYTES_PER_ELEMENT + 9 * 4


def _blocks(n: int, c: int, s: int, device: torch.device, kind: Kind) -> list[_engine.Block]:
    """The blocks of ``(N, C, S)`` logits; ``ALL`` when one block covers them."""
    if c == 0:
        return []
    working_set = _PER_CLASS_WORKING_SET if kind.per_class else WORKING_SET_BYTES_PER_ELEMENT
    walk: list[_engine.Block] = list(blocks(n, c, s, device, working_set))
    return [_engine.ALL] if len(walk) == 1 else walk


def _block(x3: torch.Tensor, block: _engine.Block) -> torch.Tensor:
    return x3 if block is _engine.ALL else x3[block[0], :, block[1]]


def weight_sum(kind: Kind) -> torch.Tensor | float | None:
    """What a backward passes back to ``make_kind`` as ``weight_sum``."""
    return kind.weight_sum if isinstance(kind, _engine.ClassIndex) else None


def side_divisor(kind: Kind, mode: str, normalizer: torch.Tensor | float | None) -> torch.Tensor | float | None:
    """What ``'mean'`` divides the z-loss by: the ``normalizer``, else the count of counted positions (it
    is never class-weighted)."""
    if mode != "mean":
        return None
    return divisor(normalizer, kind.acc) if normalizer is not None else kind.count()


def outputs(
    kind: Kind,
    stats: Statistics,
    mode: str,
    div: torch.Tensor | float | None,
    side_div: torch.Tensor | float | None,
    shape: tuple[int, ...],
    out_dtype: torch.dtype,
    per_position: torch.Tensor | None = None,
    correct: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The loss (``shape`` for ``'none'``), and with ``extras`` the per-position ``lse`` and entropy
    (``shape``), the reduced z-loss term and the accuracy, in the accumulation dtype.

    ``per_position`` and ``correct``: the cross-entropy and the counted positions whose argmax is the
    target, when a kernel formed them (else from ``kind`` and ``stats``).
    """
    options = kind.options
    loss = reduce(kind.loss(stats) if per_position is None else per_position, mode, div)
    z_value = None
    if options.z_loss != 0.0:
        z_value = reduce(options.z_loss * _engine.lse(stats, kind.counted).square(), mode, side_div)
        loss = loss + z_value
    loss = (loss.reshape(shape) if mode == "none" else loss).to(out_dtype)
    if not options.extras:
        return (loss,)
    if z_value is None:
        z_value = torch.zeros(shape if mode == "none" else (), dtype=kind.acc, device=loss.device)
    correct = kind.correct(stats) if correct is None else correct
    accuracy = torch.full((), torch.nan, dtype=kind.acc) if correct is None else correct.sum() / kind.count()
    lse = _engine.lse(stats, kind.counted).reshape(shape)
    ent = _engine.entropy(stats, kind.counted).reshape(shape)
    return loss, lse, ent, (z_value.reshape(shape) if mode == "none" else z_value), accuracy.to(loss.device)


def mark_outputs(ctx: Any, results: tuple[torch.Tensor, ...]) -> None:
    """Only the loss, ``lse`` and the entropy carry gradients; autograd hands the backward None for unused ones."""
    ctx.set_materialize_grads(False)
    if len(results) > 1:
        ctx.mark_non_differentiable(*results[3:])


def upstreams(
    options: LogitOptions,
    acc: torch.dtype,
    grads: tuple[torch.Tensor | None, ...],
    mode: str,
    div: torch.Tensor | float | None,
    side_div: torch.Tensor | float | None,
    positions: tuple[int, ...],
    device: torch.device,
    unit: bool = False,
) -> tuple[torch.Tensor, Side | None]:
    """``coef = d output / d l_n`` and the side terms' factors, from the upstream gradients of the
    outputs (``grads``: of the loss, then of ``lse`` and the entropy; None where none flowed). With
    ``unit``, the loss's upstream gradient is 1: what a forward forms its gradient for."""
    if grads[0] is not None:
        g = grads[0].to(acc)
    else:
        g = torch.full((), 1.0 if unit else 0.0, dtype=acc, device=device)
        g = g.expand(positions) if mode == "none" else g  # one factor for every position
    coef = upstream(g, mode, div, positions)
    z = upstream(g, mode, side_div, positions) if options.z_loss != 0.0 else None
    lse_grad, ent_grad = (grads[1:3] + (None, None))[:2]
    lse = None if lse_grad is None else lse_grad.to(acc).reshape(positions)
    ent = None if ent_grad is None else ent_grad.to(acc).reshape(positions)
    if z is None and lse is None and ent is None:
        return coef, None
    return coef, Side(z, lse, ent)


def side_gradients(grads: tuple[torch.Tensor | None, ...]) -> bool:
    """Whether the ``lse`` or entropy outputs got an upstream gradient (the forward's gradient lacks them)."""
    return any(g is not None for g in grads[1:3])


def _targets(x3: torch.Tensor, target: torch.Tensor, call: CrossEntropyCall) -> torch.Tensor:
    n, _, s = x3.shape
    return as_ncs(target) if call.probability else target.reshape(n, s)


class CrossEntropyFunction(torch.autograd.Function):
    """``loss = reduce(l)`` of the logits ``x``, for class indices or probabilities (see ``_engine``)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        normalizer: torch.Tensor | float | None,
        call: CrossEntropyCall,
        shard: Shard | None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if call.native:
            return _native_forward(ctx, x, target, weight, normalizer, call)
        x3 = as_ncs(x)
        n, c, s = x3.shape
        kind, out_dtype = make_kind(x.dtype, _targets(x3, target, call), weight, call, c, shard)
        acc = kind.acc
        precompute = call.gradient_expected and not call.inplace_backward and shard is None and c > 0
        precompute = precompute and not any(ctx.needs_input_grad[1:3])
        grad = torch.empty(x.shape, dtype=x.dtype, device=x.device) if precompute else None
        # a local call knows every target weight before the walk; shards know them after ``combine``
        mode, div = output(call.reduction, normalizer, acc, kind.mean_divisor if shard is None else None)
        side_div = side_divisor(kind, mode, normalizer)
        coef, side = None, None  # the gradient for an upstream gradient of 1 ('none': of each position's loss)
        if precompute:
            summed = "sum" if mode == "none" else mode
            coef, side = upstreams(call.options, acc, (None,), summed, div, side_div, (), x.device, unit=True)

        grad3 = as_ncs(grad) if grad is not None else None

        def blocks() -> Iterator[tuple[_engine.Block, torch.Tensor, torch.Tensor | None]]:
            for block in _blocks(n, c, s, x.device, kind):
                xb = _block(x3, block).to(acc)
                direct = grad3 is not None and grad3.dtype == acc
                # the gradient lands in its buffer, or in the block's own float32 copy of half logits
                yield block, xb, _block(grad3, block) if direct else xb if xb.dtype != x.dtype else None  # type: ignore[arg-type]

        def put(block: _engine.Block, g: torch.Tensor) -> None:
            if g.dtype != x.dtype:
                _block(grad3, block).copy_(g)  # type: ignore[arg-type]

        stats = _engine.walk(kind, blocks(), coef=coef, side=side, grad=put)
        assert stats is not None
        kind, stats = kind.combine(stats, shard.group if shard is not None else None)
        if div is None and mode == "mean":
            div = kind.mean_divisor(stats)  # the target weights of every shard
        results = outputs(kind, stats, mode, div, side_div, output_shape(x), out_dtype)

        ctx.call, ctx.shard, ctx.mode, ctx.overwrote_logits = call, shard, mode, False
        scalars = save_scalars(ctx, div, weight_sum(kind), side_div)
        ctx.save_for_backward(x, target, weight, *_engine.for_backward(stats, kind.options), *scalars, grad)
        mark_outputs(ctx, results)
        return results if len(results) > 1 else results[0]

    @staticmethod
    @first_order
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if ctx.overwrote_logits:
            raise RuntimeError(
                "cross_entropy(inplace_backward=True) overwrote the logits with their gradient; "
                "backward through this graph a second time needs inplace_backward=False"
            )
        if grads[0] is None and not side_gradients(grads):
            return (None,) * 6
        if ctx.call.native:
            return _native_backward(ctx, grads)
        x, target, weight, *fields, saved_divisor, saved_weight_sum, saved_side_div, precomputed = ctx.saved_tensors
        call: CrossEntropyCall = ctx.call
        x3 = as_ncs(x)
        n, c, s = x3.shape
        handed = None
        if not side_gradients(grads) and grads[0] is not None:
            handed = hand_over(ctx, [precomputed], _factor(ctx, x, grads[0]))
        grad_x = handed[0] if handed is not None else None
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        if grad_x is not None and not (need_t or need_w):
            return grad_x, None, None, None, None, None

        div, total_weight, side_div = saved_scalars(ctx, (saved_divisor, saved_weight_sum, saved_side_div))
        kind, _ = make_kind(x.dtype, _targets(x3, target, call), weight, call, c, ctx.shard, total_weight)
        stats = _engine.from_saved(*fields)
        coef, side = upstreams(kind.options, kind.acc, grads, ctx.mode, div, side_div, (n, s), x.device)
        in_place = call.inplace_backward and x.is_contiguous()
        if need_x and grad_x is None:
            # into the logits, into the forward's buffer (a side output's gradient), or a fresh one
            grad_x = x if in_place else reuse(ctx, precomputed)
            if grad_x is None:
                grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            ctx.overwrote_logits = in_place
        else:
            need_x = False
        grad_t = torch.empty_like(target) if need_t else None
        grad_w = torch.zeros(c, dtype=kind.acc, device=x.device) if need_w else None
        gx3 = as_ncs(grad_x) if need_x and grad_x is not None else None
        direct = gx3 is not None and gx3.dtype == kind.acc and grad_x.is_contiguous()  # type: ignore[union-attr]

        def blocks() -> Iterator[tuple[_engine.Block, torch.Tensor, torch.Tensor | None]]:
            for block in _blocks(n, c, s, x.device, kind):
                yield block, _block(x3, block).to(kind.acc), _block(gx3, block) if direct else None  # type: ignore[arg-type]

        def put(block: _engine.Block, g: torch.Tensor) -> None:
            if not direct:
                _block(gx3, block).copy_(g)  # type: ignore[arg-type]

        def put_target(block: _engine.Block, gt: torch.Tensor, gw: torch.Tensor) -> None:
            if grad_t is not None:
                _block(as_ncs(grad_t), block).copy_(gt)
            if grad_w is not None:
                grad_w.add_(gw)  # block partial sums in block order: deterministic

        target_grads = put_target if need_t or need_w else None
        grad_fn = put if need_x else None
        _engine.walk(kind, blocks(), stats=stats, coef=coef, side=side, grad=grad_fn, target_grads=target_grads)
        if need_x and c == 0 and grad_x is not None:
            grad_x.zero_()
        return grad_x, grad_t, grad_w.to(weight.dtype) if grad_w is not None else None, None, None, None


def _factor(ctx: Any, x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """What the gradient formed for an upstream gradient of 1 is multiplied by."""
    return (grad_output.unsqueeze(1) if ctx.mode == "none" and x.dim() > 1 else grad_output).to(x.dtype)


def _native_targets(target: torch.Tensor, rows: int, call: CrossEntropyCall) -> tuple[torch.Tensor | None, ...]:
    """Class indices as int64 ``(N,)``, or probabilities as contiguous rows ``(N, C)``."""
    if call.probability:
        return None, as_rows(target, class_dim(target))
    return target.reshape(rows).long(), None


def _native_forward(
    ctx: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    normalizer: torch.Tensor | float | None,
    call: CrossEntropyCall,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The forward on the native kernels: one pass over each row for statistics, loss and gradient."""
    from crossent.native import kernels

    x2 = as_rows(x, class_dim(x))
    n = x2.shape[0]
    index, prob = _native_targets(target, n, call)
    positions = (lambda: torch.tensor(float(n))) if call.probability else None
    mode, div = output(call.reduction, normalizer, torch.float32, positions)
    opts = call.options
    # a focal or poly-1 loss scales each row's gradient by h(log p_y), known after the kernel's pass: the
    # backward forms it
    want_grad = call.gradient_expected and not call.inplace_backward and not opts.modulated
    # the gradient for an upstream gradient of 1; a class-index 'mean' divides by the total target
    # weight, which the kernel finds first (and the z-loss by the count of kept rows)
    mean_over_weight = want_grad and mode == "mean" and div is None
    scale = 1.0 if mean_over_weight else upstream(1.0, "sum" if mode == "none" else mode, div, ())
    coef, scale = (scale, 1.0) if isinstance(scale, torch.Tensor) else (None, scale)
    stats, total_weight, grad = kernels.cross_entropy_rows(
        x2, index, prob, weight, call.ignore_index, call.label_smoothing, want_grad, coef, scale, mean_over_weight,
        opts.softcap or 0.0, opts.temperature, opts.z_loss, opts.extras,
    )  # fmt: skip
    if div is None and mode == "mean":
        div = total_weight
    ctx.call, ctx.shard, ctx.mode, ctx.overwrote_logits = call, None, mode, False
    precomputed = grad.view(x.shape) if want_grad else None
    if opts == LogitOptions():
        scalars = save_scalars(ctx, div, None)
        ctx.save_for_backward(x, target, weight, stats, *scalars, precomputed)
        loss = reduce(stats[0], mode, div)
        return (loss.reshape(output_shape(x)) if mode == "none" else loss).to(call.loss_dtype or x.dtype)
    kind = _native_kind(x, target, weight, call)
    side_div = side_divisor(kind, mode, normalizer)
    scalars = save_scalars(ctx, div, side_div)
    ctx.save_for_backward(x, target, weight, stats, *scalars, precomputed)
    correct = stats[5].unsqueeze(1) > 0 if opts.extras and not call.probability else None
    per_row = None if opts.modulated else stats[0].unsqueeze(1)  # the engine's loss of the kernel's statistics
    results = outputs(
        kind,
        _native_statistics(stats, kind, x2),
        mode,
        div,
        side_div,
        output_shape(x),
        call.loss_dtype or x.dtype,
        per_row,
        correct,
    )
    mark_outputs(ctx, results)
    return results if len(results) > 1 else results[0]


def _native_kind(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, call: CrossEntropyCall) -> Kind:
    """The engine's view of a native call's targets, as one position per row."""
    x3 = as_ncs(x)
    return make_kind(x.dtype, _targets(x3, target, call), weight, call, x3.shape[1], None)[0]


def _native_statistics(stats: torch.Tensor, kind: Kind, x2: torch.Tensor) -> Statistics:
    """The kernel's per-row statistics ``(4 or 6, N)`` as the engine's, one position per row: the
    shift, the sum of exponentials and, with the statistics, ``E``; for a focal or poly-1 loss also
    ``z_y`` (gathered, then transformed) and ``w_y``."""
    shift, sum_exp = stats[1].unsqueeze(1), stats[2].unsqueeze(1)
    entropy = stats[4].unsqueeze(1) if stats.shape[0] > 4 else None
    if not isinstance(kind, _engine.ClassIndex) or not kind.options.modulated:
        return Statistics(shift, sum_exp, sum_exp, None, None, entropy)
    z_y, _ = kind.options.transform(x2.gather(1, kind.local).to(kind.acc), None, False)
    return Statistics(shift, sum_exp, z_y, kind.target_weight, None, entropy)


def _native_backward(ctx: Any, grads: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...]:
    """The backward on the native kernels: a rescale of the forward's gradient, or one pass per row."""
    x, target, weight, stats, saved_divisor, saved_side_div, precomputed = ctx.saved_tensors
    if not side_gradients(grads) and grads[0] is not None:
        handed = hand_over(ctx, [precomputed], _factor(ctx, x, grads[0]))
        if handed is not None:
            return handed[0], None, None, None, None, None
    if ctx.overwrote_logits:
        raise RuntimeError(
            "cross_entropy(inplace_backward=True) overwrote the logits with their gradient; "
            "backward through this graph a second time needs inplace_backward=False"
        )
    call: CrossEntropyCall = ctx.call
    div, side_div = saved_scalars(ctx, (saved_divisor, saved_side_div))
    x2 = as_rows(x, class_dim(x))
    coef, side = upstreams(call.options, torch.float32, grads, ctx.mode, div, side_div, (x2.shape[0], 1), x.device)
    if call.inplace_backward and x.is_contiguous():
        _native_gradient(call, x2, target, weight, stats, coef, side, x2)
        ctx.overwrote_logits = True
        return x, None, None, None, None, None
    reused = reuse(ctx, precomputed)  # a gradient the forward could not form: into the forward's buffer
    out = None if reused is None else reused.view(x2.shape)
    grad = _native_gradient(call, x2, target, weight, stats, coef, side, out)
    return grad.view(x.shape), None, None, None, None, None


def _native_gradient(
    call: CrossEntropyCall,
    x2: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    stats: torch.Tensor,
    coef: torch.Tensor,
    side: Side | None,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """One pass of the native backward kernel over the rows ``x2``: ``d output / d x`` for ``coef`` and the
    side terms' factors, into ``out`` (which may be ``x2``; None: a new buffer)."""
    from crossent.native import kernels

    opts = call.options
    n = x2.shape[0]
    index, prob = _native_targets(target, n, call)
    lse_coef, ent_coef = None, None
    if side is not None or opts.modulated:
        kind = _native_kind(x2, prob if prob is not None else index, weight, call)  # type: ignore[arg-type]
        row_stats = _native_statistics(stats, kind, x2)
        if side is not None:
            lse_coef, ent_coef = _engine.side_coefficients(row_stats, side, opts, kind.counted)
        if opts.modulated:
            assert isinstance(kind, _engine.ClassIndex)  # class indices only, by the dispatcher
            coef = coef * kind.target_modulation(row_stats)[1]  # cross-entropy's row gradient, times h(log p_y)
    coef = coef if coef.dim() == 0 else coef.reshape(n)
    args = (index, prob, weight, stats[1], stats[2], stats[3] if prob is not None else None, coef)
    extra = (opts.softcap or 0.0, opts.temperature, lse_coef, ent_coef, stats[4] if ent_coef is not None else None)
    if out is None:
        return kernels.cross_entropy_rows_backward(x2, *args, call.ignore_index, call.label_smoothing, *extra)
    kernels.cross_entropy_rows_backward_into(out, x2, *args, call.ignore_index, call.label_smoothing, *extra)
    return out
