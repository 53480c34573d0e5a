"""``vocab_parallel_linear_cross_entropy``: fused linear + cross-entropy with the classifier sharded by class.

The forward runs the fused pass (``crossent.fused._function.fused_pass``) over this rank's logits
``h @ W[V_r].T + b[V_r]`` a chunk of rows at a time for the shard's statistics, then the engine's
collective ``combine``. The backward runs the pass again with the combined statistics for this
rank's ``dW[V_r]``, ``db[V_r]`` (complete: the shard's classes see every row) and its share of the
input gradient, ``G @ W[V_r]``, summed over ranks with ``reduce_input_grad=True``. The collectives
run inside this autograd Function, on buffers outside any graph: ``all_reduce`` has no autograd
formula, so inside a differentiable graph it would silently give each rank only its own terms.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from crossent import _checks, _engine
from crossent._reduction import output
from crossent._results import CrossEntropyStats, pack
from crossent.distributed import _consensus, _group
from crossent.distributed._group import Group, resolve
from crossent.distributed.cross_entropy import check_cross_entropy, loss_dtypes, own_slice, same_device, weight_shape_of
from crossent.fused._chunks import Projection
from crossent.fused._function import Wanted, as_inputs, fused_pass
from crossent.fused._options import FusedOptions, plan
from crossent.fused.functional import causal_positions, unshift
from crossent.ops._autograd import first_order, save_scalars, saved_scalars
from crossent.ops.cross_entropy import (
    Shard,
    make_kind,
    mark_outputs,
    outputs,
    side_divisor,
    upstreams,
    weight_sum,
)

__all__ = ["vocab_parallel_linear_cross_entropy"]

CALLER = "vocab_parallel_linear_cross_entropy"
REFUSED = "refused the backward: double backward (create_graph=True) is not supported"


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    process_group: dist.ProcessGroup,
    normalizer: torch.Tensor | float | None = None,
    reduce_input_grad: bool = True,
    chunk_size: int | None = None,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: bool = False,
    shift: int = 0,
    focal_gamma: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, CrossEntropyStats]:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` when each rank holds a slice of the classes.

    Rank ``r`` holds the classifier rows of classes ``[o_r, o_r + V_r)`` (ranks in order, widths free):
    ``linear_weight (V_r, H)``, ``linear_bias (V_r,)`` and class ``weight (V_r,)`` (or the full ``(V,)``); ``input`` and
    class-index targets are the same on every rank. Every rank returns the loss, and the gradients of
    its shard, of ``crossent.cross_entropy(input @ W.T + b, target, ...)`` on the whole classifier::

        l_n = m_n [(1 - eps) w[y_n] (lse_n - x[n, y_n]) + (eps / V) sum_c w[c] (lse_n - x[n, c])]
        l_n = -sum_c w[c] q[n, c] log_softmax(x)[n, c],    q = (1 - eps) t + eps / V   (probabilities)

    with ``x = input @ W.T + b`` over all ``V`` classes of all ranks, never formed: each rank computes
    its ``N x V_r`` logits a chunk of rows at a time.

    Reductions: ``'none'``, ``'sum'``, ``'mean'`` (divides by ``W = sum_n m_n w[y_n]`` for class
    indices, by ``N`` for probabilities); with ``normalizer`` the loss is ``sum_n l_n / normalizer``.

    Communication: the forward makes three collectives, as :func:`vocab_parallel_cross_entropy`
    (the fixed-size agreement table, an all-reduce MAX of ``N`` values, an all-reduce SUM of 2 to 5
    values per row). The backward gives ``linear_weight``, ``linear_bias`` and the probability
    target and class weight their exact gradients locally; the gradient of ``input`` is a sum over
    ranks of ``dL/dlogits[V_r] @ W[V_r]``. With ``reduce_input_grad=True`` the backward all-reduces
    it (one SUM of ``N x H`` float32 values, float64 for float64 inputs, plus one flag per rank), so
    every rank holds the full gradient. Pass ``False`` when your framework reduces the input
    gradient of the vocab-parallel projection itself (Megatron's column-parallel linear does): each
    rank then returns its share, and reducing in both places would multiply the gradient by the
    group size. The backward is first-order: ``create_graph=True`` raises ``RuntimeError``, and a
    rank that asks for it still joins the input-gradient all-reduce, so its peers raise
    :class:`crossent.distributed.PeerError` instead of waiting.

    Agreement: as for :func:`vocab_parallel_cross_entropy` (see there), with the exceptions torch's
    ``linear`` raises for the linear layer's arguments (``ValueError`` for a bad ``chunk_size``,
    ``TypeError`` for a ``reduce_input_grad`` that is not a bool). The ranks must also agree on the
    shape of ``input`` (so the hidden size ``H`` too), ``reduce_input_grad`` and whether the input
    gradient is computed (``input.requires_grad`` with grad mode on). Not compared: the values of
    ``input`` (only its shape and dtype), the sharded tensors, ``chunk_size``, and a rank's bias being
    None rather than zeros.

    Args:
        input: hidden states ``(*, H)`` (or ``(H,)``), identical on every rank.
        linear_weight: this rank's classifier rows ``(V_r, H)``, same dtype as ``input``.
        target: global class ids ``(*)`` (int64 or uint8), identical on every rank; or this rank's slice
            of the class probabilities ``(*, V_r)``.
        linear_bias: this rank's bias slice ``(V_r,)``.
        weight: the class weights, this rank's slice ``(V_r,)`` or all of them ``(V,)``, as in
            :func:`vocab_parallel_cross_entropy`.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: class ids equal to it contribute nothing; None means -100 (as in torch's
            ``linear_cross_entropy``). Must be None or negative for probabilities.
        label_smoothing: ``eps`` in ``[0, 1]``, spread over all ``V`` classes.
        process_group: the ranks that share the class dimension.
        normalizer: divide the summed loss by this number or one-element tensor (never read on the host).
        reduce_input_grad: all-reduce the input gradient in the backward (see above).
        chunk_size: rows of logits formed at a time (default: as ``crossent.linear_cross_entropy``, a
            workspace of a quarter of the weight gradient, within 16 and 256 MiB).
        softcap, temperature, z_loss, return_stats: as in :func:`vocab_parallel_cross_entropy`
            (the statistics add one all-reduce MIN of ``N`` int64 values, for the accuracy).
        shift: the causal shift of :func:`crossent.linear_cross_entropy`.
        focal_gamma: the focal loss of :func:`crossent.linear_cross_entropy` (no collective of its
            own: ``p_t`` comes from the global statistics).

    Shape:
        ===================  ========================================  ===================
        input                target                                    output (``'none'``)
        ===================  ========================================  ===================
        ``(H,)``             ``()`` or ``(V_r,)``                      ``()``
        ``(N, H)``           ``(N,)`` or ``(N, V_r)``                  ``(N,)``
        ``(B, T, ..., H)``   ``(B, T, ...)`` or ``(B, T, ..., V_r)``   ``(B, T, ...)``
        ===================  ========================================  ===================

    Example:
        >>> # on each of 2 ranks (torchrun --nproc-per-node 2): the classifier's 5 rows split 3 + 2
        >>> import torch, torch.distributed as dist
        >>> from crossent.distributed import vocab_parallel_linear_cross_entropy
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
        >>> rows = W[:3] if dist.get_rank() == 0 else W[3:]  # doctest: +SKIP
        >>> y = torch.tensor([0, 3])  # global class ids
        >>> vocab_parallel_linear_cross_entropy(h, rows, y, process_group=dist.group.WORLD)  # doctest: +SKIP
        tensor(1.1405)
    """
    group = resolve(process_group, CALLER)

    def validate() -> tuple[_consensus.Call, tuple[torch.Tensor, torch.Tensor, FusedOptions]]:
        logits, t = _check_linear(input, linear_weight, target, linear_bias, weight, reduce_input_grad)
        index = -100 if ignore_index is None else ignore_index
        options = _checks.logit_options(CALLER, softcap, temperature, z_loss, return_stats)
        if focal_gamma != 0.0:
            _checks.focal_arguments(CALLER, input, target, focal_gamma, "focal_gamma")
            options = options._replace(focal_gamma=float(focal_gamma))
        call = check_cross_entropy(
            logits, t, weight, index, reduction, label_smoothing, normalizer, CALLER, input.device, options
        )
        _checks.causal_shift(shift, input, call.probability, CALLER)
        grad_mode = torch.is_grad_enabled()
        grads = grad_mode and any(x is not None and x.requires_grad for x in (input, linear_weight, linear_bias))
        call = replace(call, gradient_expected=grads)
        dtypes = loss_dtypes(input, call, target, weight)
        (n, classes), shape = logits.shape, tuple(input.shape)
        h = input.reshape(n, input.shape[-1])
        # chunks as crossent.linear_cross_entropy sizes them; rows are not dropped (no host read of targets)
        others = tuple(d for d in dtypes[1:] if d is not None)  # probability targets, class weights
        opts = plan(call, h, linear_weight, classes, others, chunk_size=chunk_size, drop_ignored=False)
        input_grad = grad_mode and input.requires_grad
        mine = _consensus.Call(
            CALLER,
            call,
            classes,
            shape,
            dtypes,
            t,
            normalizer,
            reduce_input_grad,
            input_grad,
            shift,
            weight_shape_of(weight),
        )
        return mine, (h, t, opts)

    shard, (h, t, opts) = _consensus.agree_on(group, group.device_for(input), CALLER, validate)
    weight = own_slice(weight, shard, linear_weight.shape[0])
    t = t.unsqueeze(-1)[shift:]  # the engine's (N, 1) ids or (N, V_r, 1) probabilities
    valid = causal_positions(h.shape[0], input.shape[-2], shift, h.device) if shift else None
    args = (h, linear_weight, linear_bias, t, weight, normalizer, opts, group, shard, reduce_input_grad, valid)
    out = VocabParallelLinearCrossEntropyFunction.apply(*args)
    none = opts.call.reduction == "none"
    return pack(out, opts.call.probability, none, lambda r: unshift(r, shift).reshape(input.shape[:-1]))


def _check_linear(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    linear_bias: torch.Tensor | None,
    weight: torch.Tensor | None,
    reduce_input_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's checks of the linear layer, then the shard's own; returns meta logits and the flat target.

    The logits are ``(N, V_r)``, the target ``(N,)`` ids or ``(N, V_r)`` probabilities. A target of
    neither shape comes back as it is, with logits of the shape it had to match, so that the
    cross-entropy checks raise torch's error for it.
    """
    if isinstance(linear_weight, torch.Tensor) and linear_weight.dim() > 2:  # no K-dimensional loss
        raise RuntimeError(
            f"{CALLER}: linear_weight must be this rank's classifier rows (V_r, H), "
            f"got shape {list(linear_weight.shape)}"
        )
    # ignore_index is left to the cross-entropy's checks, which accept a negative one with probabilities
    shapes = _checks.linear_cross_entropy_arguments(input, linear_weight, target, linear_bias, weight, None)
    if not isinstance(reduce_input_grad, bool):
        raise TypeError(f"{CALLER}: reduce_input_grad must be bool, not {type(reduce_input_grad).__name__}")
    same_device(input.device, linear_weight=linear_weight, target=target, linear_bias=linear_bias)
    n, c, batch = shapes.rows, shapes.num_classes, shapes.batch
    logits = torch.empty(n, c, dtype=input.dtype, device="meta")
    if target.is_floating_point() and tuple(target.shape) == (*batch, c):
        return logits, target.reshape(n, c)
    if tuple(target.shape) == batch or (input.dim() == 1 and tuple(target.shape) == (1,)):
        return logits, target.reshape(n)
    return torch.empty(shapes.logits, dtype=input.dtype, device="meta"), target


class VocabParallelLinearCrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of ``h @ W.T + b`` with ``W``, ``b`` sharded by class; class indices or probabilities.

    ``target`` is ``(N, 1)`` class ids or ``(N, V_r, 1)`` probabilities; the output is ``(N, 1)`` for ``'none'``.
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
        valid: torch.Tensor | None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        kind, out_dtype = make_kind(h.dtype, target, weight, opts.call, w.shape[0], shard, valid=valid)
        stats = fused_pass(Projection(h, w, b), kind, opts, None).stats
        assert stats is not None
        kind, stats = kind.combine(stats, shard.group)
        mode, div = output(opts.call.reduction, normalizer, kind.acc, lambda: kind.mean_divisor(stats))
        side_div = side_divisor(kind, mode, normalizer)
        ctx.mode, ctx.opts, ctx.group, ctx.shard, ctx.acc = mode, opts, group, shard, kind.acc
        # every rank joins the input-gradient all-reduce (the ranks agreed on both in the forward)
        ctx.sums_input_grad = reduce_input_grad and ctx.needs_input_grad[0]
        scalars = save_scalars(ctx, div, weight_sum(kind), side_div)
        ctx.save_for_backward(h, w, b, target, weight, valid, *scalars, *_engine.for_backward(stats, kind.options))
        results = outputs(kind, stats, mode, div, side_div, tuple(stats.shift.shape), out_dtype)
        mark_outputs(ctx, results)
        return results if len(results) > 1 else results[0]

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled() and ctx.sums_input_grad:
            # _backward refuses a double backward; first join the peers' input-gradient all-reduce
            _sum_input_grad(None, ctx, refused=True)
        return _backward(ctx, *grads)


def _sum_input_grad(share: torch.Tensor | None, ctx: Any, refused: bool) -> torch.Tensor:
    """All-reduce SUM this rank's input-gradient share (zeros when refused) in the accumulation dtype;
    every rank that did not refuse raises if any rank refused."""
    h = ctx.saved_tensors[0]
    share = torch.zeros_like(h, dtype=ctx.acc) if share is None else share.to(ctx.acc)
    return _group.sum_flagged(ctx.group, share, refused, CALLER, REFUSED)


@first_order
def _backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    h, w, b, target, weight, valid, saved_divisor, saved_weight_sum, saved_side_div, *fields = ctx.saved_tensors
    div, total_weight, side_div = saved_scalars(ctx, (saved_divisor, saved_weight_sum, saved_side_div))
    kind, _ = make_kind(h.dtype, target, weight, ctx.opts.call, w.shape[0], ctx.shard, total_weight, valid)
    stats = _engine.from_saved(*fields)
    coef, side = upstreams(kind.options, kind.acc, grads, ctx.mode, div, side_div, tuple(stats.shift.shape), h.device)
    wanted = Wanted(*ctx.needs_input_grad[:5])
    r = fused_pass(Projection(h, w, b), kind, ctx.opts, None, stats=stats, coef=coef, side=side, wanted=wanted)
    if ctx.sums_input_grad:
        r = r._replace(input=_sum_input_grad(r.input, ctx, refused=False))
    return *as_inputs(r, (h, w, b, target, weight)), *[None] * 6
