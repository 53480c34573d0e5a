"""Per-chunk loss and logits gradient, for class-index and for probability targets.

A head sees one chunk of logits ``x3 (r, C, S)`` at a time. It returns the chunk's per-position loss
and log-sum-exp (as ``RowStats``: max and log-sum, from crossent's row kernel), and writes
``d loss / d logits`` scaled by the per-position coefficient ``coef`` (the upstream gradient, the
``'mean'`` divisor and the ignore mask folded together) into ``grad3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from crossent.fused._chunks import RowChunk
from crossent.ops._layout import blocks
from crossent.ops.cross_entropy import RowStats, class_index_grad, class_index_loss, gradient_spec, row_stats


class TargetGradients(NamedTuple):
    """Accumulators for the gradients of probability targets and their class weights (None: not asked for)."""

    target: torch.Tensor | None  # (N, C, S), target dtype
    class_weight: torch.Tensor | None  # (C,), accumulation dtype


@dataclass(frozen=True)
class ClassIndexHead:
    """``l = m [(1 - eps) w_y (lse - x_y) + (eps / C) sum_c w_c (lse - x_c)]``, ``m = [y != ignore_index]``."""

    target: torch.Tensor  # (N, S) int64, ignored positions replaced by class 0
    keep: torch.Tensor  # (N, S) bool
    weight: torch.Tensor | None  # (C,) in acc
    eps: float
    classes: int
    acc: torch.dtype

    @property
    def positions(self) -> int:
        return self.target.shape[1]

    @classmethod
    def build(
        cls,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        ignore_index: int,
        eps: float,
        classes: int,
        acc: torch.dtype,
    ) -> ClassIndexHead:
        t = target.long()
        keep = t != ignore_index
        # without classes every target is ignored and an empty weight has nothing to look up
        w = weight.to(acc) if weight is not None and classes > 0 else None
        return cls(torch.where(keep, t, 0), keep, w, eps, classes, acc)

    def divisor(self) -> torch.Tensor:
        """The ``'mean'`` divisor ``sum_n m_n w[y_n]`` (0/0 = nan when every target is ignored)."""
        if self.weight is None:
            return self.keep.sum().to(self.acc)
        return torch.where(self.keep, self.weight[self.target], 0).sum()

    def coefficients(self, g: torch.Tensor) -> torch.Tensor:
        """Per-position gradient coefficient: ``g`` where the target is kept, else 0 (even for g = inf)."""
        return torch.where(self.keep, g, 0)

    def kept_rows(self) -> torch.Tensor | None:
        """Row numbers with at least one kept position; None when that is every row (reads the mask)."""
        rows = self.keep.any(1).nonzero().squeeze(1)
        return None if rows.shape[0] == self.keep.shape[0] else rows

    def chunk(
        self,
        x3: torch.Tensor,
        rows: RowChunk,
        stats: RowStats | None,
        coef: torch.Tensor | None,
        grad3: torch.Tensor | None,
        want_loss: bool,
        extra: TargetGradients,
    ) -> tuple[torch.Tensor | None, RowStats]:
        c = self.classes
        t = rows.take(self.target)
        w_t = self.weight[t] if self.weight is not None else None
        if stats is None:
            stats = row_stats(x3, self.acc, self.weight, smoothing=want_loss and self.eps > 0)
        loss = class_index_loss(x3, stats, t, rows.take(self.keep), w_t, self.eps) if want_loss else None
        if grad3 is not None and coef is not None and c > 0:
            # d/dx_c l = coef [(1-eps) w_y (p_c - [c=y]) + (eps/C)(p_c sum_k w_k - w_c)],  p = softmax(x)
            class_index_grad(x3, stats, gradient_spec(grad3, t, coef, self.weight, self.eps, c))
        return loss, stats


@dataclass(frozen=True)
class ProbabilityHead:
    """``l = -sum_c w_c q_c log_softmax(x)_c`` with ``q = (1 - eps) t + eps / C``."""

    target: torch.Tensor  # (N, C, S)
    weight: torch.Tensor | None  # (C,) in acc
    eps: float
    classes: int
    acc: torch.dtype

    @property
    def positions(self) -> int:
        return self.target.shape[2]

    def divisor(self) -> torch.Tensor:
        """The ``'mean'`` divisor: the number of positions ``N * S``, 0 without classes (as torch's numel / C)."""
        n, c, s = self.target.shape
        return torch.tensor(n * s if c > 0 else 0, dtype=self.acc, device=self.target.device)

    def coefficients(self, g: torch.Tensor) -> torch.Tensor:
        n, _, s = self.target.shape
        return g.expand(n, s)

    def chunk(
        self,
        x3: torch.Tensor,
        rows: RowChunk,
        stats: RowStats | None,
        coef: torch.Tensor | None,
        grad3: torch.Tensor | None,
        want_loss: bool,
        extra: TargetGradients,
    ) -> tuple[torch.Tensor | None, RowStats]:
        r, c, s = x3.shape
        t3 = rows.take(self.target)
        if stats is None:
            stats = row_stats(x3, self.acc)
        w = self.weight.view(1, c, 1) if self.weight is not None else None
        # sum_c w_c q_c lp_c; its negation is the loss, so an empty sum is -0. as in torch
        neg_loss = torch.zeros(r, s, dtype=self.acc, device=x3.device) if want_loss else None
        grad_t = torch.empty_like(t3) if extra.target is not None and coef is not None else None
        for bn, bs in blocks(r, c, s) if c > 0 else ():
            lp = (x3[bn, :, bs].to(self.acc) - stats.max[bn, bs].unsqueeze(1)).sub_(stats.log_sum[bn, bs].unsqueeze(1))
            q = t3[bn, :, bs].to(self.acc)
            if self.eps > 0:
                q = q * (1 - self.eps) + self.eps / c
            wq = q * w if w is not None else q
            if neg_loss is not None:
                neg_loss[bn, bs] = (lp * wq).sum(1)  # 0 * (-inf) = nan, as in torch
            if coef is None:
                continue
            gb = coef[bn, bs].unsqueeze(1)
            # d/dt_c l = -(1-eps) w_c lp_c g;  d/dw_c l = -q_c lp_c g;  d/dx_c l = g (p_c sum_k w_k q_k - w_c q_c)
            if grad_t is not None:
                scale = -(1 - self.eps) * gb
                grad_t[bn, :, bs] = lp * (scale * w if w is not None else scale)
            if extra.class_weight is not None:
                extra.class_weight.sub_((q * lp * gb).sum((0, 2)))
            if grad3 is not None:
                grad3[bn, :, bs] = lp.exp_().mul_(wq.sum(1, keepdim=True)).sub_(wq).mul_(gb)
        if grad_t is not None and extra.target is not None:
            rows.put(extra.target, grad_t)
        return (neg_loss.neg() if neg_loss is not None else None), stats


Head = ClassIndexHead | ProbabilityHead
