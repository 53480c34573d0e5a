"""Vocab-parallel cross-entropy over logits: the autograd Function, with a hand-written local backward.

Rank r holds the logits ``x[:, V_r]`` of its contiguous class range. Once the ranks have agreed
(``_consensus``, before ``apply``), the forward walks them in cache-sized blocks once (local
statistics, see ``_heads``), then makes exactly two collectives: an all-reduce MAX of the row maxima
and one all-reduce SUM of the concatenated per-position sums. The backward recomputes ``softmax``
block by block from the saved global statistics and makes no collective; it is first-order only
(``create_graph=True`` raises).

Why an autograd Function: ``torch.distributed.all_reduce`` is not differentiable. Called on tensors in
an autograd graph it mutates them in place and autograd treats it as the identity, so each rank's
gradient silently misses the other ranks' terms (torch 2.13 only warns that "an autograd kernel was
not registered"). Here the collectives run inside ``forward``, on buffers outside any graph, and
``backward`` is written from the formula, so the gradients are exact.
"""

from __future__ import annotations

from typing import Any

import torch

from crossent.distributed._consensus import Layout
from crossent.distributed._group import Group
from crossent.distributed._heads import ClassIndexHead, Head, ProbabilityHead
from crossent.distributed._validate import CrossEntropySpec
from crossent.distributed.normalization import as_divisor
from crossent.ops._autograd import first_order
from crossent.ops._layout import accumulation_dtype, as_ncs, blocks

CALLER = "vocab_parallel_cross_entropy"


def reduce_loss(
    per_position: torch.Tensor,
    head: Head,
    spec: CrossEntropySpec,
    normalizer: torch.Tensor | float | None,
    out_dtype: torch.dtype,
    shape: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor | float | None]:
    """Apply the reduction (or the normalizer) to the per-position loss; also return the divisor used."""
    divisor = as_divisor(normalizer, head.acc) if normalizer is not None else None
    if divisor is None and spec.reduction == "mean":
        divisor = head.mean_divisor()
    if spec.reduction == "none":
        return per_position.to(out_dtype).reshape(shape), None
    if isinstance(head, ProbabilityHead):
        total = per_position.neg().sum().neg()  # an empty sum is -0., as torch's probability path gives
    else:
        total = per_position.sum()
    return (total if divisor is None else total / divisor).to(out_dtype), divisor


def upstream(
    grad_output: torch.Tensor,
    spec: CrossEntropySpec,
    divisor: torch.Tensor | float | None,
    n: int,
    s: int,
    acc: torch.dtype,
) -> torch.Tensor:
    """The gradient of each position's loss ``(N, S)`` from the gradient of the (reduced) output."""
    g = grad_output.to(acc)
    if spec.reduction == "none":
        return g.reshape(n, s)
    if divisor is not None:
        g = g / divisor
    return g.expand(n, s)


class VocabParallelCrossEntropyFunction(torch.autograd.Function):
    """Cross-entropy of logits sharded on the class dimension, class indices or probabilities."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        normalizer: torch.Tensor | float | None,
        spec: CrossEntropySpec,
        group: Group,
        layout: Layout,
    ) -> torch.Tensor:
        x3 = as_ncs(x)
        n, c, s = x3.shape
        head: Head
        if spec.probability:
            dtypes = (x.dtype, target.dtype) + ((weight.dtype,) if weight is not None else ())
            acc = accumulation_dtype(*dtypes)
            out_dtype = x.dtype
            for dt in dtypes[1:]:
                out_dtype = torch.promote_types(out_dtype, dt)
            head = ProbabilityHead(spec, as_ncs(target), weight, acc)
            shape: tuple[int, ...] = () if x.dim() == 1 else (n, *x.shape[2:])
        else:
            acc, out_dtype = accumulation_dtype(x.dtype), x.dtype
            head = ClassIndexHead(spec, target.reshape(n, s), weight, c, acc)
            shape = () if x.dim() == 1 else tuple(target.shape)

        for bn, bs in blocks(n, c, s):
            head.absorb(x3[bn, :, bs].to(acc), bn, bs)
        target_logit = None
        if isinstance(head, ClassIndexHead):
            _, local = head.locate(layout)
            target_logit = x3.gather(1, local.unsqueeze(1)).squeeze(1).to(acc) if c > 0 else None
        per_position = head.reduce(layout, target_logit, group)
        out, divisor = reduce_loss(per_position, head, spec, normalizer, out_dtype, shape)

        ctx.head, ctx.spec, ctx.divisor = head, spec, divisor
        ctx.save_for_backward(x, target, weight)
        return out

    @staticmethod
    @first_order
    def backward(
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None, None, None]:
        x, target, weight = ctx.saved_tensors
        head: Head = ctx.head
        x3 = as_ncs(x)
        n, c, s = x3.shape
        g = upstream(grad_output, ctx.spec, ctx.divisor, n, s, head.acc)
        head.set_upstream(g, as_ncs(target) if ctx.spec.probability else None)
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else None
        grad_t = torch.empty(target.shape, dtype=target.dtype, device=target.device) if need_t else None
        grad_w = torch.zeros(c, dtype=head.acc, device=x.device) if need_w else None
        grad_x3 = as_ncs(grad_x) if grad_x is not None else None  # a view: grad_x is fresh and contiguous
        direct = grad_x3 is not None and grad_x3.dtype == head.acc
        for bn, bs in blocks(n, c, s) if c > 0 else ():
            out = grad_x3[bn, :, bs] if direct and grad_x3 is not None else None
            gx, gt, gw = head.grad_block(x3[bn, :, bs].to(head.acc), bn, bs, out)
            if grad_x3 is not None and not direct:
                grad_x3[bn, :, bs] = gx
            if grad_t is not None and gt is not None:
                as_ncs(grad_t)[bn, :, bs] = gt
            if grad_w is not None and gw is not None:
                grad_w += gw
        return grad_x, grad_t, grad_w.to(weight.dtype) if grad_w is not None else None, None, None, None, None
