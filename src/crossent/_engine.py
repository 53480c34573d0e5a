"""The cross-entropy engine: per-position statistics, their combination over shards, the loss and its gradient.

Every cross-entropy path is a driver over this module. ``ops.cross_entropy`` feeds it blocks of the
logits, ``fused`` the row chunks of a matmul, and vocab-parallel runs either driver with a
collective ``combine``. The Triton kernels compute the same statistics on the GPU. For one call::

    kind = ClassIndex.build(...) or Probability.build(...)
    stats = walk(kind, blocks)                     # kind.absorb(xb, block) per block, assembled
    kind, stats = kind.combine(stats, group)       # the identity locally; two all-reduces for shards
    loss = kind.loss(stats)                        # (N, S) per position
    walk(kind, blocks, stats=stats, coef=coef, grad=sink)   # kind.scales, kind.grad_block per block

Statistics are kept relative to a per-position shift ``k``: the row max, or the lowest finite value
where the row is all ``-inf`` (so ``x - k`` is ``-inf`` there, not NaN). ``x - k`` is then exact
(Sterbenz), and ``lse - x_y`` is formed as ``(k - x_y) + log S``: a single ``lse = k + log S``
would carry an error of ``ulp(k)`` into every log-probability (6e-5 for float32 logits near 1000).

Class indices ``y`` (``m = [y != ignore_index]``, ``eps`` = label smoothing over all ``V`` classes)::

    S = sum_c exp(x_c - k)    T = x_y    Z = sum_c w_c (x_c - k)    (w_y from the shard owning y)
    l = m [(1 - eps) w_y ((k - T) + log S) + (eps / V) (log S sum_c w_c - Z)]

Class probabilities ``t`` (``q = (1 - eps) t + eps / V``)::

    S = sum_c exp(x_c - k)    A = sum_c w_c q_c (x_c - k)    B = sum_c w_c q_c
    l = B log S - A

Every term of ``Z`` and ``A`` has one sign (``x_c - k <= 0``): no cancellation, even for V = 256k.

Language-model options (``LogitOptions``) act on every path at once. The statistics are those of
``z = softcap tanh(x / softcap) / temperature``, formed block by block, and the gradient reaches ``x``
through ``dz/dx``. ``return_stats`` adds two sums of the same pass, ``E = sum_c exp(z_c - k) (z_c - k)``
(every term one sign) and the first argmax, from which::

    lse = k + log S    H = log S - E / S    z-loss term = z_loss lse^2

at counted positions (0 at ignored ones). Their gradients join the cross-entropy's as two more
per-position factors (``Side``).

A focal or poly-1 loss puts ``f(log p)`` where cross-entropy has ``-log p``
(``LogitOptions.modulation``, with ``h = -df / d log p``). Class indices without label smoothing need
only ``log p_y = (x_y - k) - log S``: the loss is ``m w_y f(log p_y)`` and the gradient cross-entropy's
times ``h(log p_y)``. Otherwise each class weighs in with its target mass ``a_c = w_c q_c``, and a
block whose statistics are final (one shard) also sums::

    L = sum_c a_c f(log p_c)    G = sum_c a_c h(log p_c)    d L / d z_c = p_c G - a_c h(log p_c)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch

Block = tuple[slice | torch.Tensor, slice]  # rows (a slice, or the numbers of kept rows) and positions


class Statistics(NamedTuple):
    """Per-position sums ``(N, S)`` in the accumulation dtype; see the module docstring."""

    shift: torch.Tensor  # k
    sum_exp: torch.Tensor  # S
    target: torch.Tensor  # class indices: T = x_y; probabilities: A
    weight: torch.Tensor | None  # class indices: w_y (None: unweighted); probabilities: B
    smooth: torch.Tensor | None  # class indices with label smoothing: Z
    entropy: torch.Tensor | None = None  # with ``extras``: E = sum_c exp(z_c - k) (z_c - k)
    argmax: torch.Tensor | None = None  # with ``extras``, class indices: the first argmax's global id (int64)
    modulated: torch.Tensor | None = None  # a focal or poly-1 loss summed class by class: L = sum_c a_c f(log p_c)
    slope: torch.Tensor | None = None  # ... and G = sum_c a_c h(log p_c), what its gradient needs


SAVED_FIELDS = 6


def for_backward(stats: Statistics, options: LogitOptions) -> tuple[torch.Tensor | None, ...]:
    """The ``SAVED_FIELDS`` fields the gradient needs (``k``, ``S``, ``w_y`` or ``B``, ``E``, and for a
    focal or poly-1 loss ``x_y`` and ``G``); ``from_saved`` restores them."""
    target = stats.target if options.modulated else None
    return stats.shift, stats.sum_exp, stats.weight, stats.entropy, target, stats.slope


def from_saved(
    shift: torch.Tensor,
    sum_exp: torch.Tensor,
    weight: torch.Tensor | None,
    entropy: torch.Tensor | None,
    target: torch.Tensor | None,
    slope: torch.Tensor | None,
) -> Statistics:
    # the target sum is needed again only by a focal or poly-1 loss
    target = sum_exp if target is None else target
    return Statistics(shift, sum_exp, target, weight, None, entropy, None, None, slope)


class LogitOptions(NamedTuple):
    """What the loss sees of the logits ``x`` and what it reports besides: the language-model options.

    ``z = softcap tanh(x / softcap) / temperature`` (without a softcap, ``x / temperature``); the loss
    and every statistic are those of ``z``. ``z_loss`` adds ``z_loss lse(z)^2`` per counted position;
    ``extras`` forms ``E`` and the argmax in the walk, for ``lse``, the entropy and the accuracy.
    """

    softcap: float | None = None
    temperature: float = 1.0
    z_loss: float = 0.0
    extras: bool = False
    focal_gamma: float = 0.0  # each class's -log p_c times (1 - p_c)^gamma
    poly_epsilon: float = 0.0  # plus epsilon (1 - p_c)

    @property
    def names(self) -> tuple[str, ...]:
        """The options in use, by their keyword names."""
        used = {
            "softcap": self.softcap is not None,
            "temperature": self.temperature != 1.0,
            "z_loss": self.z_loss != 0.0,
            "return_stats": self.extras,
            "focal_gamma": self.focal_gamma != 0.0,
            "poly_epsilon": self.poly_epsilon != 0.0,
        }
        return tuple(name for name, on in used.items() if on)

    @property
    def modulated(self) -> bool:
        """Whether each position's loss is reshaped by its target probability (focal, poly-1)."""
        return self.focal_gamma != 0.0 or self.poly_epsilon != 0.0

    def modulation(self, log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(log p) = (1 - p)^gamma (-log p) + epsilon (1 - p)``, what a focal or poly-1 loss puts where
        cross-entropy has ``-log p``, and ``h = -df / d log p`` (1 for both of cross-entropy)."""
        p = log_p.exp()
        rest = torch.special.expm1(log_p).neg_()  # 1 - p, exact for confident predictions
        gamma, epsilon = self.focal_gamma, self.poly_epsilon
        if gamma == 0.0:
            f, h = log_p.neg(), torch.ones_like(log_p)
        else:
            focal = rest.pow(gamma)
            f = torch.mul(focal, log_p).neg_()
            # -d/dlog p [(1-p)^g (-log p) + e (1-p)] = (1-p)^g - g p (1-p)^(g-1) log p + e p; the middle
            # term's limit is 0 at p = 0 and p = 1, where its factors give 0 * inf (NaN, set to 0)
            tilt = rest.pow(gamma - 1).mul_(log_p).mul_(p).nan_to_num_(0.0, math.inf, -math.inf)
            h = torch.sub(focal, tilt, alpha=gamma)
        if epsilon != 0.0:
            f, h = f.add_(rest, alpha=epsilon), h.add_(p, alpha=epsilon)
        return f, h

    def transform(
        self, xb: torch.Tensor, out: torch.Tensor | None, slope: bool
    ) -> tuple[torch.Tensor, torch.Tensor | float | None]:
        """``z`` of the block (into ``out`` when given; ``xb`` itself when nothing changes it) and, with
        ``slope``, ``dz/dx`` (a number for a temperature alone)."""
        if self.softcap is not None:
            t = torch.div(xb, self.softcap, out=out).tanh_()
            # dz/dx = (1 - tanh^2(x / c)) / T, from tanh itself: (1 - t) is exact where tanh saturates
            d = torch.rsub(t, 1).mul_(t + 1).div_(self.temperature) if slope else None
            return t.mul_(self.softcap / self.temperature), d
        if self.temperature != 1.0:
            return torch.div(xb, self.temperature, out=out), 1 / self.temperature  # dz/dx = 1 / T
        return xb, None


class Side(NamedTuple):
    """Upstream factors of the per-position side terms (0-dim or ``(N, S)``; None: no gradient)."""

    z_loss: torch.Tensor | None  # d output / d (z-loss term_n)
    lse: torch.Tensor | None  # d output / d lse_n
    entropy: torch.Tensor | None  # d output / d H_n


def lse(stats: Statistics, counted: torch.Tensor | None) -> torch.Tensor:
    """``lse = k + log S`` at counted positions, 0 elsewhere."""
    value = stats.shift + stats.sum_exp.log()
    return value if counted is None else torch.where(counted, value, 0)


def entropy(stats: Statistics, counted: torch.Tensor | None) -> torch.Tensor:
    """``H = -sum_c p_c log p_c = log S - E / S`` (``E <= 0``: both terms >= 0) at counted positions, 0 elsewhere."""
    assert stats.entropy is not None  # formed by a walk with ``extras``
    value = stats.sum_exp.log() - stats.entropy / stats.sum_exp
    return value if counted is None else torch.where(counted, value, 0)


def side_coefficients(
    stats: Statistics, side: Side, options: LogitOptions, counted: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(d output / d lse_n, d output / d H_n)`` at counted positions (0 elsewhere; None: no gradient),
    the z-loss term's part included in the first."""
    lse_coef: torch.Tensor | None = None
    if side.z_loss is not None and options.z_loss != 0.0:
        lse_coef = side.z_loss * (2 * options.z_loss) * lse(stats, None)  # d(z_loss lse^2) = 2 z_loss lse d lse
    if side.lse is not None:
        lse_coef = side.lse if lse_coef is None else lse_coef + side.lse
    ent_coef = None if side.entropy is None else side.entropy.expand(stats.shift.shape)
    if counted is not None:
        lse_coef = None if lse_coef is None else torch.where(counted, lse_coef, 0)
        ent_coef = None if ent_coef is None else torch.where(counted, ent_coef, 0)
    return lse_coef, ent_coef


def side_factors(
    stats: Statistics, side: Side, options: LogitOptions, counted: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The side terms' parts of ``d output / d z_c = a_n p_c + b_n p_c (z_c - k)``, as ``(a_n / S, b_n / S)``."""
    # d lse / dz_c = p_c;  dH / dz_c = p_c (E / S - (z_c - k)),  since log S - H = E / S
    a, ent_coef = side_coefficients(stats, side, options, counted)
    if ent_coef is None:
        return (None if a is None else a / stats.sum_exp), None
    assert stats.entropy is not None
    a = ent_coef * stats.entropy / stats.sum_exp if a is None else a + ent_coef * stats.entropy / stats.sum_exp
    return a / stats.sum_exp, ent_coef.neg() / stats.sum_exp


def _exps(shifted: torch.Tensor, out: torch.Tensor | None, keep: bool) -> torch.Tensor:
    """``exp(z - k)`` over ``shifted``: in its place, or with ``keep`` into ``out`` (a new buffer when None)."""
    return exp(shifted, out=out) if keep else exp(shifted, out=shifted)


def _entropy_sum(exps: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """``E = sum_c exp(z_c - k) (z_c - k)`` (``shifted`` is clamped: it is not needed afterwards)."""
    shifted.clamp_min_(torch.finfo(shifted.dtype).min)  # exp(-inf) (-inf) would be NaN; 0 (lowest) is 0
    return torch.linalg.vecdot(exps, shifted, dim=1)


def _per_class_refused(sharded: bool, per_class: bool) -> None:
    if sharded and per_class:
        raise ValueError(
            "a focal or poly-1 loss with label smoothing or class-probability targets sums over every class's "
            "probability, which vocab shards do not hold in one place: use class indices without label smoothing"
        )


def _scaled_exps(
    xb: torch.Tensor,
    shift: torch.Tensor,
    p: torch.Tensor,
    shifted_scale: torch.Tensor | None,
    out: torch.Tensor | None,
    exps: torch.Tensor | None,
) -> torch.Tensor:
    """``exp(z - k) (p + q (z - k))`` per column (into ``out`` if given; ``exps``: ``exp(z - k)`` when known)."""
    if shifted_scale is None:
        if exps is None:
            exps = torch.sub(xb, shift.unsqueeze(1), out=out)
            exp(exps, out=exps)
        return exps.mul_(p.unsqueeze(1))
    shifted = torch.sub(xb, shift.unsqueeze(1), out=out).clamp_min_(torch.finfo(xb.dtype).min)
    e = exp(shifted)
    return shifted.mul_(shifted_scale.unsqueeze(1)).add_(p.unsqueeze(1)).mul_(e)


def _shift(xb: torch.Tensor) -> torch.Tensor:
    """The row max ``(b, 1, s)``, raised to the dtype's lowest finite value where the row is all ``-inf``."""
    return xb.amax(1, keepdim=True).clamp_min_(torch.finfo(xb.dtype).min)


_LOG2_E = 1.4426950408889634


def exp(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``exp(x)``, into ``out`` when given (it may be ``x``); in float32 as ``2 ** (x log2 e)``, cheaper
    (no extended-precision range reduction). Rounding ``x log2 e`` adds a relative error of about
    ``|x|`` ulps, which only terms far below the row max (``exp(x)`` tiny) see: the loss and gradient
    stay as close to float64 as torch's. float64 keeps ``exp`` itself, the reference precision."""
    if x.dtype == torch.float64:
        return torch.exp(x, out=out)
    return torch.mul(x, _LOG2_E, out=out).exp2_()


def _empty_shift(zeros: torch.Tensor) -> torch.Tensor:
    """The shift of a row without classes: the lowest finite value, as for a row of ``-inf``."""
    return torch.full_like(zeros, torch.finfo(zeros.dtype).min)


def _common_shift(stats: Statistics, group: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The all-reduce MAX of the row maxima over shards, ``M``, and ``k - M`` (which moves local sums to ``M``).

    A shard row without a finite logit (``S = 0``) takes part as ``-inf``.
    """
    import torch.distributed as dist

    global_shift = torch.where(stats.sum_exp > 0, stats.shift, -math.inf)
    dist.all_reduce(global_shift, op=dist.ReduceOp.MAX, group=group)
    return global_shift, stats.shift - global_shift


def _all_sum(fields: list[torch.Tensor], scalar: torch.Tensor | float | None, group: Any) -> list[torch.Tensor]:
    """One all-reduce SUM of the per-position ``fields`` (and of one ``scalar``, returned last as a 0-dim)."""
    import torch.distributed as dist

    parts = [f.reshape(-1) for f in fields]
    if scalar is not None:
        parts.append(torch.as_tensor(scalar, dtype=fields[0].dtype, device=fields[0].device).reshape(1))
    flat = torch.cat(parts)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    n = fields[0].numel()
    summed = [flat[i * n : (i + 1) * n].view(fields[0].shape) for i in range(len(fields))]
    return summed + ([flat[-1]] if scalar is not None else [])


def _moved_entropy(stats: Statistics, moved: torch.Tensor) -> torch.Tensor | None:
    """A shard's ``E`` relative to the common shift: ``sum_c exp(z_c - M)(z_c - M) = e^{k - M} (E + (k - M) S)``."""
    if stats.entropy is None:
        return None
    return torch.where(stats.sum_exp > 0, (stats.entropy + moved * stats.sum_exp) * moved.exp(), 0)


def _first_argmax(stats: Statistics, global_shift: torch.Tensor, group: Any) -> torch.Tensor:
    """The global first argmax: the lowest id among the shards whose maximum is the common one (all-reduce MIN)."""
    import torch.distributed as dist

    assert stats.argmax is not None
    none = torch.iinfo(torch.int64).max
    first = torch.where((stats.shift == global_shift) & (stats.sum_exp > 0), stats.argmax, none)
    dist.all_reduce(first, op=dist.ReduceOp.MIN, group=group)
    return torch.where(first == none, 0, first)  # no finite logit anywhere: torch's argmax is 0


ALL: Block = (slice(None), slice(None))


def _at(t: torch.Tensor, block: Block) -> torch.Tensor:
    """The block's part of a per-position tensor ``(N, S)``."""
    return t if block is ALL else t[block]


Fields = TypeVar("Fields", bound=tuple)


def at(fields: Fields, block: Block) -> Fields:
    """The block's positions of per-position fields (``Statistics``, or a kind's scales)."""
    if block is ALL:
        return fields
    return type(fields)(*(f if f is None or f.dim() == 0 else f[block] for f in fields))


def walk(
    kind: Kind,
    blocks: Iterable[tuple[Block, torch.Tensor, torch.Tensor | None]],
    *,
    stats: Statistics | None = None,
    coef: torch.Tensor | None = None,
    side: Side | None = None,
    grad: Callable[[Block, torch.Tensor], None] | None = None,
    target_grads: Callable[[Block, torch.Tensor, torch.Tensor], None] | None = None,
) -> Statistics | None:
    """The one driver loop: every path hands the engine its blocks and takes the gradients it forms.

    ``blocks`` yields ``(block, xb, out)``: the positions, the block's logits ``(b, C, s)`` in the
    accumulation dtype, and where ``z``, ``exp(z - k)`` and then the block's gradient may be written
    (None: a new buffer; it may be ``xb`` itself). Without ``stats`` each block is absorbed and the
    statistics of all positions are returned. With ``coef`` (``d output / d l_n``, 0-dim or per
    position) and ``side`` (the side terms' factors), each block's gradient goes to ``grad(block, g)``
    and, for probabilities, the target's and class weight's to ``target_grads(block, d_target,
    d_weight)``; without ``stats`` they come from the block's own statistics, which must then be
    final (one shard: ``combine`` is the identity).
    """
    parts = []
    for block, xb, out in blocks:
        z, slope = kind.options.transform(xb, out, coef is not None and grad is not None)
        if z is not xb:
            out = z  # z is the block's own: its exponentials and gradient may overwrite it
        if stats is None:
            part, exps, slopes = kind.absorb(z, block, out)
            parts.append((block, part))
        else:
            part, exps, slopes = at(stats, block), None, None
        if coef is None:
            continue
        block_side = None if side is None else at(side, block)
        scales = kind.scales(part, coef if coef.dim() == 0 else _at(coef, block), block, block_side)
        if target_grads is not None and isinstance(kind, Probability):
            target_grads(block, *kind.target_grads(z, block, part, scales))  # type: ignore[arg-type]
        if grad is not None:
            g = kind.grad_block(z, block, part, scales, out, exps, slopes)  # type: ignore[arg-type]
            grad(block, g if slope is None else g.mul_(slope))
    if stats is not None:
        return None
    return assemble(parts, kind) if parts else kind.empty()


def assemble(parts: Sequence[tuple[Block, Statistics]], kind: Kind) -> Statistics:
    """The statistics of all positions from those of each block (one block covering all is used as is)."""
    n, s = kind.positions
    if len(parts) == 1 and parts[0][1].shift.shape == (n, s):
        return parts[0][1]
    first = parts[0][1]
    fields = [
        None if f is None else torch.zeros(n, s, dtype=f.dtype, device=f.device) for f in first
    ]  # zeros: rows no block covers (dropped, every target ignored) stay finite
    for block, part in parts:
        for whole, piece in zip(fields, part, strict=True):
            if whole is not None and piece is not None:
                whole[block] = piece
    return Statistics(*fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClassIndex:
    """Class-index targets as one shard of the classes sees them (the whole class dim locally)."""

    keep: torch.Tensor  # (N, S) bool: y != ignore_index
    owned: torch.Tensor | None  # (N, S) bool: kept and in this shard; None when that is every kept target
    local: torch.Tensor  # (N, S) int64: y - offset where owned, else 0
    weight: torch.Tensor | None  # (C_local,) class weights in acc
    target_weight: torch.Tensor | None  # (N, S) w_y where owned, else 0
    eps: float
    inv_classes: float | torch.Tensor  # 1 / V (a 0-dim tensor when V comes from a collective)
    weight_sum: float | torch.Tensor  # sum_c w_c over this shard's classes until ``combine``, then all V
    classes: int  # C_local
    acc: torch.dtype
    options: LogitOptions = LogitOptions()
    ids: torch.Tensor | None = None  # (N, S) int64 global ids, for the accuracy (with ``options.extras``)
    offset: torch.Tensor | int = 0  # this shard's first class id

    @classmethod
    def build(
        cls,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        ignore_index: int,
        eps: float,
        classes: int,
        acc: torch.dtype,
        offset: torch.Tensor | None = None,
        num_classes: torch.Tensor | None = None,
        options: LogitOptions | None = None,
        valid: torch.Tensor | None = None,
    ) -> ClassIndex:
        """``target (N, S)`` of global ids; ``offset``/``num_classes`` place this shard among ``V`` classes;
        ``valid``: positions that may count at all (a causal shift's last positions do not)."""
        t = target.long()
        keep = t != ignore_index
        if valid is not None:
            keep = keep & valid
        owned = None
        if offset is None:
            local = torch.where(keep, t, 0)
        else:
            local = t - offset
            owned = keep & (local >= 0) & (local < classes)
            local = torch.where(owned, local, 0)
        w = weight.to(acc) if weight is not None else None
        target_weight = None
        if w is not None:
            target_weight = w[local] if classes > 0 else torch.zeros(local.shape, dtype=acc, device=t.device)
            if owned is not None:
                target_weight = torch.where(owned, target_weight, 0)
        if num_classes is not None:
            inv: float | torch.Tensor = num_classes.to(acc).reciprocal()
        else:
            inv = 1 / classes if classes else math.nan  # eps / C is NaN without classes, as torch's 0/0
        weight_sum = w.sum() if w is not None else (num_classes.to(acc) if num_classes is not None else float(classes))
        options = options if options is not None else LogitOptions()
        _per_class_refused(offset is not None, options.modulated and eps > 0)
        ids = t if options.extras else None
        start = offset if offset is not None else 0
        return cls(keep, owned, local, w, target_weight, eps, inv, weight_sum, classes, acc, options, ids, start)

    @property
    def positions(self) -> tuple[int, int]:
        return self.keep.shape[0], self.keep.shape[1]

    def mean_divisor(self, stats: Statistics | None = None) -> torch.Tensor:
        """``'mean'`` divides by the total target weight ``sum_n m_n w_{y_n}`` (0/0 = NaN when all are ignored).

        ``stats`` carry ``w_y`` after ``combine``; without them, this shard's own (all of them locally).
        """
        target_weight = self.target_weight if stats is None else stats.weight
        if target_weight is None:
            return self.count()
        return torch.where(self.keep, target_weight, 0).sum()

    def count(self) -> torch.Tensor:
        """The number of counted (kept) positions: what the z-loss and accuracy divide by under ``'mean'``."""
        return self.keep.sum(dtype=self.acc)

    @property
    def counted(self) -> torch.Tensor:
        return self.keep

    @property
    def per_class(self) -> bool:
        """A focal or poly-1 loss with label smoothing: ``f`` of every class's log-probability, summed."""
        return self.options.modulated and self.eps > 0

    def correct(self, stats: Statistics) -> torch.Tensor:
        """Counted positions whose first argmax is the target (``stats`` from a walk with ``extras``)."""
        assert stats.argmax is not None and self.ids is not None
        return self.keep & (stats.argmax == self.ids)

    def absorb(
        self, xb: torch.Tensor, block: Block, out: torch.Tensor | None = None
    ) -> tuple[Statistics, torch.Tensor, torch.Tensor | None]:
        """Statistics of the block ``xb = z[rows, :, cols]`` (C > 0), ``exp(xb - k)`` (into ``out`` if given)
        and, for a per-class focal or poly-1 loss, the classes' slopes ``w_c h(log p_c)`` (else None)."""
        extras, per_class = self.options.extras, self.per_class
        target = xb.gather(1, _at(self.local, block).unsqueeze(1)).squeeze(1)
        argmax = xb.argmax(1).add_(self.offset) if extras else None  # read before ``out`` may overwrite xb
        k = _shift(xb)
        shifted = torch.sub(xb, k, out=None if extras or per_class else out)
        smooth = None
        if self.eps > 0 and not per_class:
            smooth = shifted.sum(1) if self.weight is None else torch.einsum("bcs,c->bs", shifted, self.weight)
        tw = None if self.target_weight is None else _at(self.target_weight, block)
        exps = _exps(shifted, out, extras or per_class)
        stats = Statistics(k.squeeze(1), exps.sum(1), target, tw, smooth)
        slopes = None
        if per_class:
            stats, slopes = self._class_sums(shifted, stats, block)
        ent = _entropy_sum(exps, shifted) if extras else None
        return stats._replace(entropy=ent, argmax=argmax), exps, slopes

    def _class_sums(self, shifted: torch.Tensor, stats: Statistics, block: Block) -> tuple[Statistics, torch.Tensor]:
        """``L = sum_c a_c f(log p_c)`` and ``G = sum_c a_c h(log p_c)`` of a block's final statistics, with
        ``a_c = (1 - eps) w_y [c = y] + (eps / V) w_c``; and the classes' slopes ``w_c h(log p_c)``."""
        log_sum = stats.sum_exp.log()
        f, slopes = self.options.modulation(shifted - log_sum.unsqueeze(1))
        if self.weight is not None:
            f, slopes = f.mul_(self.weight.view(1, -1, 1)), slopes.mul_(self.weight.view(1, -1, 1))
        f_y, h_y = self.options.modulation((stats.target - stats.shift).sub_(log_sum))
        w_y = (1 - self.eps) * (stats.weight if stats.weight is not None else 1.0)
        share = self.eps * self.inv_classes
        keep = _at(self.keep, block)
        loss, slope = w_y * f_y + share * f.sum(1), w_y * h_y + share * slopes.sum(1)
        return stats._replace(modulated=torch.where(keep, loss, 0), slope=torch.where(keep, slope, 0)), slopes

    def empty(self) -> Statistics:
        """The statistics of a shard without classes (locally: every target is ignored)."""
        zeros = torch.zeros(self.positions, dtype=self.acc, device=self.keep.device)
        extras = self.options.extras
        argmax = torch.zeros(self.positions, dtype=torch.int64, device=zeros.device) if extras else None
        sums = zeros if self.per_class else None
        smooth = zeros if self.eps > 0 and sums is None else None
        return Statistics(
            _empty_shift(zeros), zeros, zeros, self.target_weight, smooth, zeros if extras else None, argmax, sums, sums
        )

    def combine(self, stats: Statistics, group: object | None) -> tuple[ClassIndex, Statistics]:
        """The identity without a group; across vocab shards an all-reduce MAX of the shifts and one SUM
        of the moved sums (and of the class-weight sum, for weighted smoothing); the accuracy adds an
        all-reduce MIN of the argmax."""
        if group is None:
            return self, stats
        global_shift, moved = _common_shift(stats, group)
        fields = [stats.sum_exp * moved.exp(), torch.where(self.owned, stats.target, 0)]  # type: ignore[arg-type]
        optional = [stats.weight, None, _moved_entropy(stats, moved)]
        if stats.smooth is not None:
            optional[1] = stats.smooth + moved * (self.weight_sum if self.weight is not None else self.classes)
        fields += [f for f in optional if f is not None]
        scalar = self.weight is not None and stats.smooth is not None
        summed = iter(_all_sum(fields, self.weight_sum if scalar else None, group))
        sum_exp, target = next(summed), next(summed)
        weight, smooth, ent = (None if f is None else next(summed) for f in optional)
        kind = dataclasses.replace(self, weight_sum=next(summed)) if scalar else self
        argmax = None if stats.argmax is None else _first_argmax(stats, global_shift, group)
        return kind, Statistics(global_shift, sum_exp, target, weight, smooth, ent, argmax)

    def loss(self, stats: Statistics, block: Block = ALL) -> torch.Tensor:
        """``l (N, S)`` (the block's positions); ignored positions are exactly 0, even for NaN logits
        (``where``, not a product). A focal or poly-1 loss puts ``f(log p)`` where cross-entropy has
        ``-log p`` (``LogitOptions.modulation``): ``m w_y f(log p_y)``, or with label smoothing ``L``."""
        if self.per_class:
            assert stats.modulated is not None  # formed by ``absorb``
            return stats.modulated
        if not self.options.modulated:
            return self._cross_entropy(stats, block)
        f_y, _ = self.target_modulation(stats, block)
        return torch.where(_at(self.keep, block), f_y if stats.weight is None else f_y * stats.weight, 0)

    def _cross_entropy(self, stats: Statistics, block: Block) -> torch.Tensor:
        keep = _at(self.keep, block)
        log_sum = stats.sum_exp.log()
        nll = (stats.shift - stats.target).add_(log_sum)
        if stats.weight is not None:
            nll = nll * stats.weight
        loss = torch.where(keep, nll, 0)
        if stats.smooth is not None:
            smooth = log_sum * self.weight_sum - stats.smooth
            loss = (1 - self.eps) * loss + self.eps * self.inv_classes * torch.where(keep, smooth, 0)
        return loss

    def target_modulation(self, stats: Statistics, block: Block = ALL) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` and ``h`` of ``log p_y = (x_y - k) - log S`` (exact for confident predictions)."""
        # ignored positions (and rows a fused walk dropped, whose sums are 0) take p_y = 1; the clamp keeps
        # p_y <= 1 where x_y and k come from two evaluations of a softcap (a kernel's, torch's)
        log_p = (stats.target - stats.shift).sub_(stats.sum_exp.log()).clamp_max_(0)
        return self.options.modulation(torch.where(_at(self.keep, block), log_p, 0))

    def scales(
        self, stats: Statistics, coef: torch.Tensor, block: Block = ALL, side: Side | None = None
    ) -> ClassIndexScales:
        """The factors of ``d output / d z`` at the positions of ``block`` (whose ``stats`` are given), for
        ``coef = d output / d l_n`` (0-dim, or per position of the block) and the ``side`` terms' factors."""
        # d/dx_c l = m coef [(1-eps) w_y (p_c - [c=y]) + (eps/V)(p_c sum_k w_k - w_c)],  p = exp(x - k) / S
        coef = torch.where(_at(self.keep, block), coef, 0)
        h_y = None
        if self.options.modulated:
            _, h_y = self.target_modulation(stats, block)
            if not self.per_class:
                coef = coef * h_y  # d/dz_c w_y f(log p_y) = h_y w_y (p_c - [c=y]): cross-entropy's, times h_y
        target = coef if stats.weight is None else coef * stats.weight
        smooth = None
        if self.eps > 0:
            target, smooth = target * (1 - self.eps), coef * (self.eps * self.inv_classes)
        if self.per_class:
            # d/dz_c sum_j a_j f(log p_j) = p_c G - a_c h_c: the target's part here, the classes' in grad_block
            assert stats.slope is not None and h_y is not None
            p, target = coef * stats.slope, target * h_y
        else:
            p = target if smooth is None else target + smooth * self.weight_sum
        if self.owned is not None:
            target = torch.where(_at(self.owned, block), target, 0)
        p = p / stats.sum_exp
        extra, shifted = (
            (None, None) if side is None else side_factors(stats, side, self.options, _at(self.keep, block))
        )
        return ClassIndexScales(p if extra is None else p + extra, target.neg(), smooth, shifted)

    def grad_block(
        self,
        xb: torch.Tensor,
        block: Block,
        stats: Statistics,
        scales: ClassIndexScales,
        out: torch.Tensor | None = None,
        exps: torch.Tensor | None = None,
        slopes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``d output / d z`` for the block (into ``out`` if given), from the block's ``stats`` and ``scales``;
        ``exps = exp(xb - k)`` and ``slopes`` (``absorb``'s) when the caller has them already."""
        if slopes is None:
            slopes = _class_slopes(self, xb, stats, self.weight)  # read before ``out`` may overwrite xb
        grad = _scaled_exps(xb, stats.shift, scales.p, scales.shifted, out, exps)
        grad.scatter_add_(1, _at(self.local, block).unsqueeze(1), scales.target.unsqueeze(1))
        if scales.smooth is not None:
            w = slopes if slopes is not None else self.weight.view(1, -1, 1) if self.weight is not None else None
            if w is None:
                grad.sub_(scales.smooth.unsqueeze(1))
            else:
                grad.addcmul_(scales.smooth.unsqueeze(1), w, value=-1)
        return grad


def _class_slopes(
    kind: ClassIndex | Probability, xb: torch.Tensor, stats: Statistics, factors: torch.Tensor | None
) -> torch.Tensor | None:
    """``factors_c h(log p_c)`` for every class of the block, from its final statistics (a per-class focal
    or poly-1 loss in a backward: ``absorb`` forms them in a forward; else None); ``factors``: ``(C,)`` or
    the block's shape (None: 1)."""
    if not kind.per_class:
        return None
    log_p = (xb - stats.shift.unsqueeze(1)).sub_(stats.sum_exp.log().unsqueeze(1))
    slopes = kind.options.modulation(log_p)[1]
    if factors is None:
        return slopes
    return slopes.mul_(factors.view(1, -1, 1) if factors.dim() == 1 else factors)


class ClassIndexScales(NamedTuple):
    p: torch.Tensor  # (N, S) multiplies exp(z - k)
    target: torch.Tensor  # (N, S) added at the target's column (negative)
    smooth: torch.Tensor | None  # (N, S) times w_c, subtracted from every column
    shifted: torch.Tensor | None = None  # (N, S) multiplies exp(z - k) (z - k): the entropy's term


@dataclass(frozen=True)
class Probability:
    """Class-probability targets ``(N, C_local, S)``, sharded like the logits."""

    target: torch.Tensor
    weight: torch.Tensor | None  # (C_local,) in acc
    eps: float
    inv_classes: float | torch.Tensor
    no_classes: bool  # the call has no classes at all (a shard may have none of its own)
    acc: torch.dtype
    options: LogitOptions = LogitOptions()

    @classmethod
    def build(
        cls,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        eps: float,
        acc: torch.dtype,
        num_classes: torch.Tensor | None = None,
        options: LogitOptions | None = None,
    ) -> Probability:
        c = target.shape[1]
        inv: float | torch.Tensor = num_classes.to(acc).reciprocal() if num_classes is not None else 1 / max(c, 1)
        no_classes = num_classes is None and c == 0
        w = weight.to(acc) if weight is not None else None
        options = options if options is not None else LogitOptions()
        _per_class_refused(num_classes is not None, options.modulated)
        return cls(target, w, eps, inv, no_classes, acc, options)

    @property
    def positions(self) -> tuple[int, int]:
        return self.target.shape[0], self.target.shape[2]

    def mean_divisor(self, stats: Statistics | None = None) -> torch.Tensor:
        """``'mean'`` divides by the number of positions, 0 without classes (torch's ``numel / C``)."""
        n, _, s = self.target.shape
        return torch.tensor(0 if self.no_classes else n * s, dtype=self.acc, device=self.target.device)

    def count(self) -> torch.Tensor:
        """Every position counts (none without classes)."""
        return self.mean_divisor()

    @property
    def counted(self) -> None:
        return None

    def correct(self, stats: Statistics) -> None:
        return None  # a probability target names no single class

    @property
    def per_class(self) -> bool:
        """A focal or poly-1 loss: ``f`` of every class's log-probability, weighted by ``w q``."""
        return self.options.modulated

    def _weighted(self, block: Block) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, w q)`` for the block."""
        bn, bs = block
        q = self.target[bn, :, bs].to(self.acc)
        if self.eps > 0:
            q = q * (1 - self.eps) + self.eps * self.inv_classes
        return q, (q if self.weight is None else q * self.weight.view(1, -1, 1))

    def absorb(
        self, xb: torch.Tensor, block: Block, out: torch.Tensor | None = None
    ) -> tuple[Statistics, torch.Tensor, torch.Tensor | None]:
        k = _shift(xb)
        extras, per_class = self.options.extras, self.per_class
        shifted = torch.sub(xb, k, out=None if extras or per_class else out)
        _, wq = self._weighted(block)
        # 0 * (-inf) = NaN where a -inf logit has zero target mass, as in torch
        weighted_shift = (shifted * wq).sum(1)
        exps = _exps(shifted, out, extras or per_class)
        stats = Statistics(k.squeeze(1), exps.sum(1), weighted_shift, wq.sum(1), None)
        slopes = None
        if per_class:
            # L = sum_c w_c q_c f(log p_c),  G = sum_c w_c q_c h(log p_c): the slopes' sum
            f, slopes = self.options.modulation(shifted - stats.sum_exp.log().unsqueeze(1))
            slopes = slopes.mul_(wq)
            stats = stats._replace(modulated=f.mul_(wq).sum(1), slope=slopes.sum(1))
        ent = _entropy_sum(exps, shifted) if extras else None
        return stats._replace(entropy=ent), exps, slopes

    def empty(self) -> Statistics:
        zeros = torch.zeros(self.positions, dtype=self.acc, device=self.target.device)
        sums = zeros if self.per_class else None
        entropy = zeros if self.options.extras else None
        return Statistics(_empty_shift(zeros), zeros, zeros, zeros, None, entropy, None, sums, sums)

    def combine(self, stats: Statistics, group: object | None) -> tuple[Probability, Statistics]:
        if group is None:
            return self, stats
        global_shift, moved = _common_shift(stats, group)
        mass = stats.weight
        assert mass is not None  # every probability Statistics carries B
        ent = _moved_entropy(stats, moved)
        fields = [stats.sum_exp * moved.exp(), stats.target + moved * mass, mass, *([ent] if ent is not None else [])]
        summed = _all_sum(fields, None, group)
        ent = summed[3] if ent is not None else None
        return self, Statistics(global_shift, summed[0], summed[1], summed[2], None, ent)

    def loss(self, stats: Statistics) -> torch.Tensor:
        """``l = B log S - A``: both terms are >= 0, so there is no cancellation (-0. without classes, as torch)."""
        assert stats.weight is not None
        if self.no_classes:
            return torch.full_like(stats.target, -0.0)
        if self.per_class:
            assert stats.modulated is not None  # formed by ``absorb``
            return stats.modulated
        return stats.weight * stats.sum_exp.log() - stats.target

    def scales(
        self, stats: Statistics, coef: torch.Tensor, block: Block = ALL, side: Side | None = None
    ) -> ProbabilityScales:
        assert stats.weight is not None
        coef = coef.expand(stats.shift.shape)
        # d/dz_c sum_j w_j q_j f(log p_j) = p_c G - w_c q_c h_c  (G = B, h = 1 for cross-entropy)
        p = coef * (stats.slope if self.per_class and stats.slope is not None else stats.weight) / stats.sum_exp
        extra, shifted = (None, None) if side is None else side_factors(stats, side, self.options, None)
        return ProbabilityScales(p if extra is None else p + extra, coef, stats.sum_exp.log(), shifted)

    def grad_block(
        self,
        xb: torch.Tensor,
        block: Block,
        stats: Statistics,
        scales: ProbabilityScales,
        out: torch.Tensor | None = None,
        exps: torch.Tensor | None = None,
        slopes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``d l / d x`` for the block (into ``out`` if given; ``slopes``: ``absorb``'s, when known)."""
        # d/dz_c l = g (p_c B - w_c q_c),  p = exp(z - k) / S  (a focal or poly-1 loss: p_c G - w_c q_c h_c)
        _, wq = self._weighted(block)
        if slopes is None:
            slopes = _class_slopes(self, xb, stats, wq)  # read before ``out`` may overwrite xb
        grad = _scaled_exps(xb, stats.shift, scales.p, scales.shifted, out, exps)
        return grad.addcmul_(wq if slopes is None else slopes, scales.coef.unsqueeze(1), value=-1)

    def target_grads(
        self, xb: torch.Tensor, block: Block, stats: Statistics, scales: ProbabilityScales
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient of the target block, and the block's part of the class-weight gradient ``(C_local,)``."""
        # d/dt_c l = (1-eps) w_c f_c g;  d/dw_c l = q_c f_c g,  f_c = -log p_c (focal, poly-1: f(log p_c))
        g = scales.coef.unsqueeze(1)
        lp = (xb - stats.shift.unsqueeze(1)).sub_(scales.log_sum.unsqueeze(1))
        f = self.options.modulation(lp)[0] if self.per_class else lp.neg_()
        scale = (1 - self.eps) * g
        grad_t = f * (scale if self.weight is None else scale * self.weight.view(1, -1, 1))
        q, _ = self._weighted(block)
        return grad_t, (q * f * g).sum((0, 2))


class ProbabilityScales(NamedTuple):
    p: torch.Tensor  # (N, S) g B / S, multiplies exp(z - k)
    coef: torch.Tensor  # (N, S) g = d output / d l_n
    log_sum: torch.Tensor  # (N, S) log S
    shifted: torch.Tensor | None = None  # (N, S) multiplies exp(z - k) (z - k): the entropy's term


Kind = ClassIndex | Probability
