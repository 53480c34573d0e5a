"""The fused pass over row chunks, and the autograd Function that runs it.

One pass walks the rows a chunk at a time: ``logits = h_c @ W.T + b`` into a reused workspace, the
loss and log-sum-exp from crossent's row kernels, then (when gradients are wanted) the logits
gradient ``G_c`` in place of the logits, ``dH_c = G_c @ W``, ``dW += G_c.T @ h_c`` and
``db += sum_rows G_c``. No tensor with one value per (row, class) outlives its chunk.

``'mean'`` and ``'sum'`` run the pass once, in the forward, with the upstream gradient left out: the
backward only multiplies the saved gradients by it (in place, so no second weight-gradient-sized
buffer appears). ``'none'`` cannot do that, since each row has its own upstream gradient: its
forward saves the inputs and the O(N) log-sum-exp, and its backward runs the pass again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from crossent.fused._chunks import Projection, RowChunk, row_chunks
from crossent.fused._heads import ClassIndexHead, Head, ProbabilityHead, TargetGradients
from crossent.fused._options import FusedOptions
from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype
from crossent.ops.cross_entropy import RowStats


@dataclass(frozen=True)
class Wanted:
    """Which gradients to compute, in the order of the Function's inputs."""

    input: bool = False
    weight: bool = False
    bias: bool = False
    target: bool = False
    class_weight: bool = False

    @property
    def logits_grad(self) -> bool:
        return self.input or self.weight or self.bias


class PassResult(NamedTuple):
    loss: torch.Tensor | None  # (N, S) per position, acc dtype
    stats: RowStats  # max and log_sum (N, S), acc dtype; no smoothing term
    input: torch.Tensor | None  # (N, H), input dtype
    weight: torch.Tensor | None  # (V, H), opts.grad_dtype
    bias: torch.Tensor | None  # (V,), opts.grad_dtype
    extra: TargetGradients


def make_head(
    x_dtype: torch.dtype, target: torch.Tensor, weight: torch.Tensor | None, opts: FusedOptions
) -> tuple[Head, torch.dtype]:
    """The head for ``target`` (class indices ``(N, S)`` or probabilities ``(N, C, S)``) and the output dtype."""
    if target.is_floating_point():
        dtypes = (x_dtype, target.dtype) + ((weight.dtype,) if weight is not None else ())
        acc = accumulation_dtype(*dtypes)
        out_dtype = x_dtype
        for dt in dtypes[1:]:
            out_dtype = torch.promote_types(out_dtype, dt)
        w = weight.to(acc) if weight is not None else None
        return ProbabilityHead(target, w, opts.label_smoothing, opts.num_classes, acc), out_dtype
    acc = accumulation_dtype(x_dtype)
    head = ClassIndexHead.build(target, weight, opts.ignore_index, opts.label_smoothing, opts.num_classes, acc)
    return head, x_dtype


def fused_pass(
    proj: Projection,
    head: Head,
    opts: FusedOptions,
    kept_rows: torch.Tensor | None,
    *,
    want_loss: bool,
    wanted: Wanted,
    coef: torch.Tensor | None = None,
    stats: RowStats | None = None,
) -> PassResult:
    """One walk over the row chunks: loss and log-sum-exp per position, and the ``wanted`` gradients.

    ``coef (N, S)`` multiplies the gradient of each position's loss (None: no gradients). ``stats``
    (the log-sum-exp of an earlier pass), when given, are reused instead of recomputed. Rows outside
    ``kept_rows`` get zero loss and gradient.
    """
    h, w = proj.input, proj.weight
    n, v = h.shape[0], w.shape[0]
    s = head.positions
    acc = head.acc
    grads_on = coef is not None
    device = h.device
    result = PassResult(
        loss=torch.zeros(n, s, dtype=acc, device=device) if want_loss else None,
        stats=stats
        if stats is not None
        else RowStats(torch.zeros(n, s, dtype=acc, device=device), torch.zeros(n, s, dtype=acc, device=device), None),
        input=torch.zeros_like(h) if grads_on and wanted.input else None,
        weight=torch.zeros(w.shape, dtype=opts.grad_dtype, device=device) if grads_on and wanted.weight else None,
        bias=torch.zeros(v, dtype=opts.grad_dtype, device=device) if grads_on and wanted.bias else None,
        extra=TargetGradients(
            target=torch.zeros_like(head.target) if grads_on and wanted.target else None,
            class_weight=torch.zeros(opts.num_classes, dtype=acc, device=device)
            if grads_on and wanted.class_weight
            else None,
        ),
    )
    if n == 0:
        return result

    rows_max = min(opts.chunk_rows, n)
    logits_grad = grads_on and wanted.logits_grad
    # float16/bfloat16 logits: the gradient is formed in float32, then rounded once for the dH matmul
    grad_buf = h.new_empty(rows_max, v, dtype=acc) if logits_grad and acc != h.dtype else None
    workspace = Workspace(
        logits=None if proj.onednn else h.new_empty(rows_max, v),
        grad=grad_buf,
        cast=h.new_empty(rows_max, v) if grad_buf is not None and result.input is not None else None,
    )
    for rows in row_chunks(n, kept_rows, rows_max):
        _chunk_step(proj, head, opts, rows, workspace, result, want_loss, logits_grad, coef, stats)
    return result


class Workspace(NamedTuple):
    """Buffers reused by every chunk (rows_max, V): None where not needed."""

    logits: torch.Tensor | None  # None when oneDNN returns fresh logits
    grad: torch.Tensor | None  # the logits gradient in acc, when that is not the logits' dtype
    cast: torch.Tensor | None  # that gradient rounded to the weight's dtype, for the dH matmul


def _chunk_step(
    proj: Projection,
    head: Head,
    opts: FusedOptions,
    rows: RowChunk,
    workspace: Workspace,
    result: PassResult,
    want_loss: bool,
    logits_grad: bool,
    coef: torch.Tensor | None,
    stats: RowStats | None,
) -> None:
    """One chunk of ``fused_pass``; its temporaries are freed on return, before the next chunk's appear."""
    hidden = rows.take(proj.input)
    r = hidden.shape[0]
    s = head.positions
    logits = proj.logits(hidden, workspace.logits[:r] if workspace.logits is not None else None)
    grad2 = None
    if logits_grad:
        grad2 = logits if workspace.grad is None else workspace.grad[:r]
    loss, chunk_stats = head.chunk(
        logits.view(r, opts.num_classes, s),
        rows,
        RowStats(rows.take(stats.max), rows.take(stats.log_sum), None) if stats is not None else None,
        rows.take(coef) if coef is not None else None,
        grad2.view(r, opts.num_classes, s) if grad2 is not None else None,
        want_loss,
        result.extra,
    )
    if result.loss is not None and loss is not None:
        rows.put(result.loss, loss)
    if stats is None:
        rows.put(result.stats.max, chunk_stats.max)
        rows.put(result.stats.log_sum, chunk_stats.log_sum)
    if grad2 is None:
        return
    if result.input is not None:
        grad_in = grad2 if workspace.cast is None else workspace.cast[:r].copy_(grad2)
        rows.put(result.input, proj.input_grad(grad_in))
    if result.weight is not None:
        # dW accumulates across chunks in grad_dtype (float32 for half inputs): bf16 sums diverge
        result.weight.addmm_(grad2.t().to(result.weight.dtype), hidden.to(result.weight.dtype))
    if result.bias is not None:
        result.bias.add_(grad2.sum(0))


def _reduce(loss: torch.Tensor, head: Head, reduction: str, out_dtype: torch.dtype) -> torch.Tensor:
    if reduction == "none":
        return loss.to(out_dtype)
    total = loss.sum()
    if reduction == "mean":
        total = total / head.divisor()
    return total.to(out_dtype)


def _kept_rows(head: Head, opts: FusedOptions) -> torch.Tensor | None:
    if opts.drop_ignored and isinstance(head, ClassIndexHead):
        return head.kept_rows()
    return None


def loss_only(
    h: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    opts: FusedOptions,
) -> torch.Tensor:
    """The loss without any gradient work (no_grad, or nothing requires grad): logits and log-sum-exp only."""
    head, out_dtype = make_head(opts.logits_dtype, target, class_weight, opts)
    result = fused_pass(
        Projection(h, w, b, opts.onednn), head, opts, _kept_rows(head, opts), want_loss=True, wanted=Wanted()
    )
    assert result.loss is not None
    return _reduce(result.loss, head, opts.reduction, out_dtype)


def _scaled(t: torch.Tensor | None, g: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t * g


def _as(t: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None or like is None else t.to(like.dtype)


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
        opts: FusedOptions,
    ) -> torch.Tensor:
        head, out_dtype = make_head(opts.logits_dtype, target, class_weight, opts)
        kept = _kept_rows(head, opts)
        proj = Projection(h, w, b, opts.onednn)
        ctx.opts = opts
        ctx.precomputed = None
        if opts.reduction == "none":
            result = fused_pass(proj, head, opts, kept, want_loss=True, wanted=Wanted())
            ctx.save_for_backward(h, w, b, target, class_weight, kept, result.stats.max, result.stats.log_sum)
        else:
            g = torch.ones((), dtype=head.acc, device=h.device)
            if opts.reduction == "mean":
                g = g / head.divisor()
            wanted = Wanted(*ctx.needs_input_grad[:5])
            result = fused_pass(proj, head, opts, kept, want_loss=True, wanted=wanted, coef=head.coefficients(g))
            inputs = (h, w, b, target, class_weight, kept, result.stats.max, result.stats.log_sum)
            precomputed = (
                result.input,
                _as(result.weight, w),
                _as(result.bias, b),
                result.extra.target,
                _as(result.extra.class_weight, class_weight),
            )
            if torch.compiler.is_compiling():
                # traced: the backward returns scaled copies, and the compiler plans their buffers
                ctx.save_for_backward(*inputs, *precomputed)
            else:
                # not saved tensors: the first backward hands them to autograd, which may keep them as
                # .grad and zero or accumulate into them; nothing here reads them again
                ctx.save_for_backward(*inputs)
                ctx.precomputed = precomputed
        assert result.loss is not None
        return _reduce(result.loss, head, opts.reduction, out_dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        opts: FusedOptions = ctx.opts
        h, w, b, target, class_weight, kept, row_max, log_sum, *traced = ctx.saved_tensors
        if traced:
            return (*(_scaled(p, grad_output) for p in traced), None)
        if ctx.precomputed is not None:
            # the gradients are linear in the upstream gradient: scale them in place, once
            precomputed, ctx.precomputed = ctx.precomputed, None
            return (*(p.mul_(grad_output) if p is not None else None for p in precomputed), None)
        # 'none', or a second backward through a retained graph: run the pass again from the inputs
        head, _ = make_head(opts.logits_dtype, target, class_weight, opts)
        g = grad_output.to(head.acc)
        if opts.reduction == "none":
            g = g.reshape(row_max.shape)
        elif opts.reduction == "mean":
            g = g / head.divisor()
        wanted = Wanted(*ctx.needs_input_grad[:5])
        stats = RowStats(row_max, log_sum, None)
        result = fused_pass(
            Projection(h, w, b, opts.onednn),
            head,
            opts,
            kept,
            want_loss=False,
            wanted=wanted,
            coef=head.coefficients(g),
            stats=stats,
        )
        return (
            result.input,
            _as(result.weight, w),
            _as(result.bias, b),
            result.extra.target,
            _as(result.extra.class_weight, class_weight),
            None,
        )
