"""The per-position statistics and gradients of vocab-parallel cross-entropy, for one class target kind.

A head sees this rank's logits one block ``xb = x[n0:n1, :, s0:s1]`` at a time (the whole logits for
``vocab_parallel_cross_entropy``, the chunk just computed by a matmul for the linear version) and
keeps a few numbers per position, relative to a shift ``k`` (the local row max, or 0 when the local
row is all ``-inf``). ``reduce`` then makes the loss's two collectives: an all-reduce MAX of the local
row maxima gives the global row max ``M``, each sum is moved to ``M`` (``sum exp(x - k) * exp(k - M)``,
``sum w (x - k) + (k - M) sum w``, ...), and one all-reduce SUM makes the statistics global. Every
rank then holds the same numbers, so all return the same loss. Both collectives run in the
accumulation dtype, which the ranks have agreed on (``_consensus``) before either.

Class indices (``y`` global, owned by one rank; ``eps`` = label smoothing over all ``V`` classes)::

    S = sum_c exp(x_c - M)    X = x_y - M    Z = sum_c w_c (x_c - M)    (and w_y, from the owner)
    l = (1 - eps) w_y (log S - X) + (eps / V) (log S sum_c w_c - Z)

Class probabilities (sharded like the logits; ``q = (1 - eps) t + eps / V``)::

    S = sum_c exp(x_c - M)    A = sum_c w_c q_c (x_c - M)    B = sum_c w_c q_c
    l = B log S - A

``V`` is only known after the first collective, so ``A`` and ``B`` are kept as a ``t``-part and a
uniform part and combined then. The backward of both is local to the shard: no collective.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from crossent.distributed._consensus import Layout
from crossent.distributed._group import Group
from crossent.distributed._validate import CrossEntropySpec


def _shift(row_max: torch.Tensor) -> torch.Tensor:
    """The local row max, or 0 where the local row is all ``-inf`` (so ``x - k`` is ``-inf``, not nan)."""
    return torch.where(row_max > -math.inf, row_max, 0)


class _Head:
    """What both heads share: the local row maxima and shifts, and the move from ``k`` to ``M``."""

    def __init__(self, spec: CrossEntropySpec, n: int, c: int, s: int, acc: torch.dtype, device: torch.device):
        self.spec = spec
        self.classes = c
        self.acc = acc
        self.row_max = torch.full((n, s), -math.inf, dtype=acc, device=device)
        self.shift = torch.zeros(n, s, dtype=acc, device=device)
        self.sum_exp = torch.zeros(n, s, dtype=acc, device=device)
        # set by reduce(): the global statistics the loss and the backward use
        self.global_max = self.log_sum_exp = self.inv_classes = self.upstream = torch.empty(0)

    def _shifted(self, xb: torch.Tensor, bn: slice, bs: slice) -> torch.Tensor:
        """``xb - k`` for the block, recording its local max and shift."""
        m = xb.amax(1) if self.classes > 0 else self.row_max[bn, bs]
        k = _shift(m)
        self.row_max[bn, bs] = m
        self.shift[bn, bs] = k
        return xb - k.unsqueeze(1)

    def _moved(self, group: Group) -> torch.Tensor:
        """The first collective, ``M`` = the max over ranks of the local row maxima (in place), and ``k - M``.

        ``exp(k - M)`` rescales local sums of exponentials to ``M``. ``row_max`` is ``-inf`` where this
        rank has no class.
        """
        dist.all_reduce(self.row_max, op=dist.ReduceOp.MAX, group=group.handle)
        self.global_max = self.row_max
        return self.shift - self.global_max

    def _log_probabilities_block(
        self, xb: torch.Tensor, bn: slice, bs: slice, out: torch.Tensor | None
    ) -> torch.Tensor:
        """``lp = (x - M) - log S`` for the block (into ``out`` when given); the first difference is exact."""
        lp = torch.sub(xb, self.global_max[bn, bs].unsqueeze(1), out=out)
        return lp.sub_(self.log_sum_exp[bn, bs].unsqueeze(1))


class ClassIndexHead(_Head):
    """Class-index targets ``(N, S)``, global ids, identical on every rank."""

    def __init__(
        self,
        spec: CrossEntropySpec,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        c: int,
        acc: torch.dtype,
    ):
        n, s = target.shape
        super().__init__(spec, n, c, s, acc, target.device)
        self.target = target.long()
        self.keep = self.target != spec.ignore_index
        self.weight = weight.to(acc, copy=True) if weight is not None else None
        smoothing = spec.label_smoothing > 0
        self.smooth = torch.zeros(n, s, dtype=acc, device=target.device) if smoothing else None
        # set by locate() and reduce(), then by set_upstream() for the backward
        self.owned = self.local_target = torch.empty(0)
        self.w_target = self.sum_w = self.total_weight = torch.empty(0)
        self.target_scale = self.owned_scale = self.p_scale = torch.empty(0)
        self.smooth_scale: torch.Tensor | None = None

    def absorb(self, xb: torch.Tensor, bn: slice, bs: slice) -> None:
        """Take in the block ``x[bn, :, bs]`` (in ``acc``) of this rank's logits."""
        shifted = self._shifted(xb, bn, bs)
        if self.smooth is not None:
            # every term x_c - k <= 0 has one sign: no cancellation however large V is
            w = self.weight
            self.smooth[bn, bs] = shifted.sum(1) if w is None else torch.einsum("bcs,c->bs", shifted, w)
        self.sum_exp[bn, bs] = shifted.exp_().sum(1)

    def locate(self, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
        """``(owned, local)``: which kept targets fall in this shard, and their local column (0 elsewhere)."""
        local = self.target - layout.offset
        self.owned = self.keep & (local >= 0) & (local < self.classes)
        self.local_target = torch.where(self.owned, local, 0)
        return self.owned, self.local_target

    def reduce(self, layout: Layout, target_logit: torch.Tensor | None, group: Group) -> torch.Tensor:
        """The two collectives; returns the per-position loss ``(N, S)`` (0 at ignored positions).

        ``target_logit`` is ``x[n, y_n]`` where this rank owns ``y_n`` (anything elsewhere; None
        when this rank has no class).
        """
        eps, w, acc = self.spec.label_smoothing, self.weight, self.acc
        moved = self._moved(group)
        global_max = self.global_max
        n, s = self.target.shape
        # one SUM buffer: [sum_c w_c (weighted smoothing only) | S, X, (w_y), (Z) per position]
        fields = 2 + (w is not None) + (self.smooth is not None)
        scalars = 1 if w is not None and self.smooth is not None else 0
        buffer = torch.zeros(scalars + fields * n * s, dtype=acc, device=global_max.device)
        stats = buffer[scalars:].view(fields, n, s)
        torch.mul(self.sum_exp, moved.exp(), out=stats[0])
        if target_logit is not None:
            stats[1] = torch.where(self.owned, target_logit - global_max, 0)
        if w is not None and self.classes > 0:
            stats[2] = torch.where(self.owned, w[self.local_target], 0)
        if self.smooth is not None:
            local_w = w.sum() if w is not None else self.classes
            stats[-1] = self.smooth + moved * local_w
            if w is not None:
                buffer[0] = local_w
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group.handle)

        self.log_sum_exp = stats[0].log()
        self.w_target = stats[2] if w is not None else torch.ones((), dtype=acc, device=buffer.device)
        per_position = (self.log_sum_exp - stats[1]) * self.w_target
        if self.smooth is not None:
            self.inv_classes = (eps / layout.num_classes.double()).to(acc)
            self.sum_w = buffer[0] if w is not None else layout.num_classes.to(acc)
            smooth = self.log_sum_exp * self.sum_w - stats[-1]
            per_position = (1 - eps) * per_position + self.inv_classes * smooth
        self.total_weight = torch.where(self.keep, self.w_target, 0).sum()
        # where, not multiply: an ignored row of NaN logits still contributes exactly 0
        return torch.where(self.keep, per_position, 0)

    def mean_divisor(self) -> torch.Tensor:
        return self.total_weight

    def set_upstream(self, g: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """``g``: the gradient of each position's loss, ``(N, S)`` or broadcastable."""
        coef = torch.where(self.keep, g, 0)
        self.target_scale = coef * ((1 - self.spec.label_smoothing) * self.w_target)
        self.owned_scale = torch.where(self.owned, self.target_scale, 0)
        self.smooth_scale = coef * self.inv_classes if self.smooth is not None else None
        p_scale = self.target_scale
        if self.smooth_scale is not None:
            p_scale = p_scale + self.smooth_scale * self.sum_w
        self.p_scale = p_scale

    def grad_block(
        self, xb: torch.Tensor, bn: slice, bs: slice, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None, None]:
        """The gradient of the loss for the logits block ``x[bn, :, bs]`` (in ``acc``), into ``out`` if given."""
        # d/dx_c l_n = m_n G_n [(1-eps) w_y (p_c - [c=y]) + (eps/V)(p_c sum_k w_k - w_c)]
        # lse, w_y and sum_k w_k are global (from the forward's collectives); [c=y] is non-zero on one rank
        gb = self._log_probabilities_block(xb, bn, bs, out).exp_().mul_(self.p_scale[bn, bs].unsqueeze(1))
        gb.scatter_add_(1, self.local_target[bn, bs].unsqueeze(1), self.owned_scale[bn, bs].neg().unsqueeze(1))
        if self.smooth_scale is not None:
            if self.weight is None:
                gb.sub_(self.smooth_scale[bn, bs].unsqueeze(1))
            else:
                gb.addcmul_(self.smooth_scale[bn, bs].unsqueeze(1), self.weight.view(1, -1, 1), value=-1)
        return gb, None, None


class ProbabilityHead(_Head):
    """Class-probability targets, this rank's slice ``(N, V_r, S)``; differentiable in target and weight."""

    def __init__(self, spec: CrossEntropySpec, target: torch.Tensor, weight: torch.Tensor | None, acc: torch.dtype):
        n, c, s = target.shape
        device = target.device
        super().__init__(spec, n, c, s, acc, device)
        self.target = target  # (N, V_r, S); the backward rebinds it to the saved tensor
        self.weight = weight.to(acc, copy=True).view(1, c, 1) if weight is not None else None
        self.keep_scale = 1 - spec.label_smoothing
        # A and B split into the part from (1 - eps) t and the part from the uniform eps / V
        self.target_shift = torch.zeros(n, s, dtype=acc, device=device)  # sum w t' (x - k)
        self.target_mass = torch.zeros(n, s, dtype=acc, device=device)  # sum w t'
        self.uniform_shift = torch.zeros(n, s, dtype=acc, device=device) if spec.label_smoothing > 0 else None
        self.mass = torch.empty(0)

    def absorb(self, xb: torch.Tensor, bn: slice, bs: slice) -> None:
        """Take in the block ``x[bn, :, bs]`` (in ``acc``) of this rank's logits."""
        tb = self.target[bn, :, bs].to(self.acc)
        shifted = self._shifted(xb, bn, bs)
        wt = tb * self.keep_scale if self.keep_scale != 1 else tb
        if self.weight is not None:
            wt = wt * self.weight
        terms = shifted * wt  # 0 * (-inf) = nan, as in torch ...
        if self.uniform_shift is not None:
            # ... unless eps > 0, where torch's q = t' + eps / V is positive: a -inf logit gives -inf
            terms = torch.where(wt == 0, 0, terms)
            uniform = shifted if self.weight is None else shifted * self.weight
            self.uniform_shift[bn, bs] = uniform.sum(1)
        self.target_shift[bn, bs] = terms.sum(1)
        self.target_mass[bn, bs] = wt.sum(1)
        self.sum_exp[bn, bs] = shifted.exp_().sum(1)

    def reduce(self, layout: Layout, target_logit: torch.Tensor | None, group: Group) -> torch.Tensor:
        """The two collectives; returns the per-position loss ``(N, S)``."""
        moved = self._moved(group)
        acc, eps = self.acc, self.spec.label_smoothing
        self.inv_classes = (eps / layout.num_classes.double()).to(acc)
        local_w = self.weight.sum() if self.weight is not None else self.classes
        mass = self.target_mass + self.inv_classes * local_w if eps > 0 else self.target_mass
        weighted_shift = self.target_shift + moved * self.target_mass
        if self.uniform_shift is not None:
            weighted_shift = weighted_shift + self.inv_classes * (self.uniform_shift + moved * local_w)
        stats = torch.stack([self.sum_exp * moved.exp(), weighted_shift, mass])
        dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group.handle)
        self.log_sum_exp, self.mass = stats[0].log(), stats[2]
        # -(sum_c w_c q_c log_softmax_c); an empty sum gives -0. as in torch
        return (stats[1] - self.log_sum_exp * self.mass).neg()

    def set_upstream(self, g: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """``g``: the gradient of each position's loss ``(N, S)``; ``target``: the saved ``(N, V_r, S)``."""
        self.upstream = g
        if target is not None:
            self.target = target

    def mean_divisor(self) -> float:
        return float(self.target.shape[0] * self.target.shape[2])

    def grad_block(
        self, xb: torch.Tensor, bn: slice, bs: slice, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradients for the logits block ``x[bn, :, bs]`` (in ``acc``, into ``out`` if given), its target
        block, and the block's contribution to the class-weight gradient ``(V_r,)``."""
        # d/dx_c l = G (p_c B - w_c q_c);  d/dt_c l = -(1-eps) w_c lp_c G;  d/dw_c l = -q_c lp_c G
        # B = sum_k w_k q_k and lse are global (from the forward's collectives); the rest is this shard's
        tb = self.target[bn, :, bs].to(self.acc)
        gb = self.upstream[bn, bs].unsqueeze(1)
        lp = self._log_probabilities_block(xb, bn, bs, out)
        q = tb * self.keep_scale + self.inv_classes if self.spec.label_smoothing > 0 else tb
        w = self.weight
        scale = -self.keep_scale * gb
        grad_target = lp * (scale * w if w is not None else scale)
        grad_weight = -(q * lp * gb).sum((0, 2))
        wq = q * w if w is not None else q
        grad_x = lp.exp_().mul_(self.mass[bn, bs].unsqueeze(1)).sub_(wq).mul_(gb)
        return grad_x, grad_target, grad_weight


Head = ClassIndexHead | ProbabilityHead
