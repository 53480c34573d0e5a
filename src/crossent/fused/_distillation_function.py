"""The divergences of one chunk of rows, the pass over the chunks, and the autograd Function that runs it.

A chunk's student and teacher logits (``s = (h_s W_s.T + b_s) / T`` and ``t`` likewise) are formed
in reused workspaces and turned into row log-softmaxes ``log q`` and ``log p`` in place. The
divergence then gives each row's loss and, when gradients are wanted, ``d l_n / d s`` and
``d l_n / d t`` in place of those log-probabilities; each becomes ``dH = G @ W``, ``dW += G.T @ h``
and ``db += sum_rows G`` for its model. No tensor with one value per (row, class) outlives its chunk.

As in the fused cross-entropy (``fused._function``), ``'mean'`` and ``'sum'`` form the gradients in
the forward's pass, for an upstream gradient of 1, and the backward only rescales them
(``_autograd.hand_over``); ``'none'`` saves only the inputs, and its backward runs the pass again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from crossent import _engine
from crossent.fused._chunks import Projection, RowChunk, row_chunks
from crossent.ops._autograd import first_order, hand_over

Divergence = Literal["kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[Divergence, ...] = ("kl", "reverse_kl", "jsd")
# (row, class) buffers in the softmax dtype a chunk holds besides the two models' log-probabilities:
# the probabilities of the model last through its softmax, and the JSD's log m
SCRATCH_BUFFERS: dict[Divergence, int] = {"kl": 1, "reverse_kl": 1, "jsd": 2}


@dataclass(frozen=True)
class DistillationOptions:
    """Everything about a call that is not a tensor."""

    divergence: Divergence
    beta: float  # the JSD's teacher weight (unused by the KL divergences)
    temperature: float
    reduction: Literal["none", "mean", "sum"]
    chunk_rows: int
    acc: torch.dtype  # dtype of the softmax and divergence math (float32 for half inputs)
    out_dtype: torch.dtype
    gradient_expected: bool  # grad mode on and some input requires grad
    drop_ignored: bool  # select the counted rows before any matmul (eager mode only)


class Chunk(NamedTuple):
    """One chunk's per-row loss ``(r,)`` and ``d l_n / d logits`` ``(r, V)`` of each model (None: not wanted)."""

    loss: torch.Tensor
    student: torch.Tensor | None
    teacher: torch.Tensor | None


def log_softmax_(x: torch.Tensor, exps: torch.Tensor, probabilities: bool) -> torch.Tensor:
    """``x <- log softmax(x)`` over the classes (dim 1), in place; ``exps`` is left holding
    ``exp(x - max)``, or ``softmax(x)`` itself with ``probabilities``.

    Shifted by the row max, raised to the lowest finite value where a row is all ``-inf`` (as the
    cross-entropy engine does), so ``x - k`` is exact and ``-inf`` stays ``-inf``.
    """
    shift = x.amax(1, keepdim=True).clamp_min_(torch.finfo(x.dtype).min)
    x.sub_(shift)
    total = _engine.exp(x, out=exps).sum(1, keepdim=True)
    if probabilities:
        exps.div_(total)
    return x.sub_(total.log_())


def kl(
    log_p: torch.Tensor, log_q: torch.Tensor, p: torch.Tensor, want_p: bool, want_q: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` per row, with ``0 log 0 = 0``; ``p = exp(log p)``.

    Returns the loss and the gradients for the logits of ``p`` (in place of ``log_p``) and of ``q``
    (in place of ``log_q``).
    """
    terms = log_p.sub_(log_q).mul_(p).masked_fill_(p == 0, 0)
    loss = terms.sum(1)
    # d KL / d logits_p = p (log p - log q - KL)
    grad_p = terms.addcmul_(p, loss.unsqueeze(1), value=-1) if want_p else None
    # d KL / d logits_q = q - p
    grad_q = _engine.exp(log_q, out=log_q).sub_(p) if want_q else None
    return loss, grad_p, grad_q


def jsd(
    log_q: torch.Tensor,
    log_p: torch.Tensor,
    p: torch.Tensor,
    log_m: torch.Tensor,
    beta: float,
    want_q: bool,
    want_p: bool,
) -> Chunk:
    """``beta KL(p || m) + (1 - beta) KL(q || m)`` per row, ``m = beta p + (1 - beta) q``, in log space.

    ``log m = log beta + logaddexp(log p, log q + log((1 - beta) / beta))``, formed in ``log_m``. The
    gradients (for the logits of ``q``, then of ``p``) replace ``log_q`` and ``log_p``; ``p`` (``exp(log
    p)``) is overwritten with ``q``.
    """
    torch.add(log_q, math.log1p(-beta) - math.log(beta), out=log_m)
    torch.logaddexp(log_p, log_m, out=log_m).add_(math.log(beta))
    terms_p = log_p.sub_(log_m).mul_(p).masked_fill_(p == 0, 0)
    kl_p = terms_p.sum(1)
    # d JSD / d logits_p = beta p (log p - log m - KL(p || m)), the m-terms cancelling (sum_c dm_c = 0)
    grad_p = terms_p.addcmul_(p, kl_p.unsqueeze(1), value=-1).mul_(beta) if want_p else None
    q = _engine.exp(log_q, out=p)
    terms_q = log_q.sub_(log_m).mul_(q).masked_fill_(q == 0, 0)
    kl_q = terms_q.sum(1)
    # d JSD / d logits_q = (1 - beta) q (log q - log m - KL(q || m))
    grad_q = terms_q.addcmul_(q, kl_q.unsqueeze(1), value=-1).mul_(1 - beta) if want_q else None
    return Chunk(kl_p.mul_(beta).add_(kl_q, alpha=1 - beta), grad_q, grad_p)


def weighting_model(divergence: Divergence) -> int:
    """The model (0: student, 1: teacher) whose probabilities weight the divergence's log-ratios: it goes
    through its softmax last, so that its probabilities are what the chunk's exponentials hold."""
    return 0 if divergence == "reverse_kl" else 1


def divergence(
    log_q: torch.Tensor, log_p: torch.Tensor, opts: DistillationOptions, scratch: list[torch.Tensor], wanted: Wanted
) -> Chunk:
    """The chunk's loss and gradients for student log-probabilities ``log_q`` and teacher ``log_p``;
    ``scratch[0]`` holds the probabilities of ``weighting_model``."""
    want_s, want_t = wanted.student, wanted.teacher
    if opts.divergence == "kl":
        loss, grad_t, grad_s = kl(log_p, log_q, scratch[0], want_t, want_s)
        return Chunk(loss, grad_s, grad_t)
    if opts.divergence == "reverse_kl":
        loss, grad_s, grad_t = kl(log_q, log_p, scratch[0], want_s, want_t)
        return Chunk(loss, grad_s, grad_t)
    return jsd(log_q, log_p, scratch[0], scratch[1], opts.beta, want_s, want_t)


@dataclass(frozen=True)
class Wanted:
    """Which gradients to compute, in the order of the Function's inputs."""

    student_input: bool = False
    student_weight: bool = False
    student_bias: bool = False
    teacher_input: bool = False
    teacher_weight: bool = False
    teacher_bias: bool = False

    @property
    def student(self) -> bool:
        return self.student_input or self.student_weight or self.student_bias

    @property
    def teacher(self) -> bool:
        return self.teacher_input or self.teacher_weight or self.teacher_bias


class Grads(NamedTuple):
    """One model's gradients: input in its dtype, weight and bias accumulated in float32 (or float64)."""

    input: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None


class PassResult(NamedTuple):
    loss: torch.Tensor  # (N,) in the softmax dtype; 0 on rows that do not count
    student: Grads
    teacher: Grads


class Model:
    """One model in the pass: its projection, chunk buffers and gradient accumulators."""

    def __init__(self, proj: Projection, rows: int, acc: torch.dtype, want: tuple[bool, bool, bool]) -> None:
        h, w = proj.input, proj.weight
        grad_dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
        self.proj = proj
        self.log_probs = h.new_empty(rows, w.shape[0], dtype=acc)
        # half inputs: the matmul writes its own dtype, then the log-probabilities are formed in acc
        self.matmul_out = None if h.dtype == acc else h.new_empty(rows, w.shape[0])
        self.grads = Grads(
            torch.zeros_like(h) if want[0] else None,
            torch.zeros(w.shape, dtype=grad_dtype, device=h.device) if want[1] else None,
            torch.zeros(w.shape[0], dtype=grad_dtype, device=h.device) if want[2] else None,
        )

    def chunk_log_probs(
        self, hidden: torch.Tensor, temperature: float, exps: torch.Tensor, probabilities: bool
    ) -> torch.Tensor:
        """The rows' ``log softmax((hidden @ W.T + b) / T)`` ``(r, V)`` in the softmax dtype; ``exps``
        as ``log_softmax_`` leaves it."""
        r = hidden.shape[0]
        if self.matmul_out is None:
            x = self.proj.logits(hidden, self.log_probs[:r])
        else:
            x = self.log_probs[:r].copy_(self.proj.logits(hidden, self.matmul_out[:r]))
        if temperature != 1:
            x.div_(temperature)
        return log_softmax_(x, exps[:r], probabilities)

    def absorb(self, rows: RowChunk, hidden: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor) -> None:
        """Turn the chunk's logits gradient ``scale * grad`` (``(r, 1)`` times ``(r, V)``, ``grad`` is
        overwritten) into the input, weight and bias gradients."""
        dh, dw, db = self.grads
        if dh is not None:
            # scaled after the matmul: 'mean' makes scale * grad too small for float16 (subnormal)
            rows.put(dh, self.proj.input_grad(grad).mul_(scale))
        grad.mul_(scale)
        if dw is not None:
            # dW accumulates across chunks in float32 for half inputs: bf16 sums diverge
            dw.addmm_(grad.t().to(dw.dtype), hidden.to(dw.dtype))
        if db is not None:
            db.add_(grad.sum(0).to(db.dtype))


def distillation_pass(
    student: Projection,
    teacher: Projection,
    keep: torch.Tensor | None,
    kept: torch.Tensor | None,
    opts: DistillationOptions,
    *,
    coef: torch.Tensor | None = None,
    wanted: Wanted = Wanted(),
) -> PassResult:
    """One walk over the row chunks: the per-row loss and, with ``coef`` (``d output / d l_n``, ``(N,)``,
    0 on rows that do not count), the ``wanted`` gradients. Only the rows in ``kept`` are visited
    (None: all of them); ``keep`` masks the loss of the others."""
    n, v = student.input.shape[0], student.weight.shape[0]
    rows_max = min(opts.chunk_rows, max(n, 1))
    grads = coef is not None
    wanted = wanted if grads else Wanted()
    models = (
        Model(student, rows_max, opts.acc, (wanted.student_input, wanted.student_weight, wanted.student_bias)),
        Model(teacher, rows_max, opts.acc, (wanted.teacher_input, wanted.teacher_weight, wanted.teacher_bias)),
    )
    scratch = [student.input.new_empty(rows_max, v, dtype=opts.acc) for _ in range(SCRATCH_BUFFERS[opts.divergence])]
    loss = torch.zeros(n, dtype=opts.acc, device=student.input.device)
    last = weighting_model(opts.divergence)
    for rows in row_chunks(n, kept, rows_max):
        hidden = [rows.take(m.proj.input) for m in models]
        r = hidden[0].shape[0]
        first_log_probs = models[1 - last].chunk_log_probs(hidden[1 - last], opts.temperature, scratch[0], False)
        last_log_probs = models[last].chunk_log_probs(hidden[last], opts.temperature, scratch[0], True)
        log_q, log_p = (last_log_probs, first_log_probs) if last == 0 else (first_log_probs, last_log_probs)
        chunk = divergence(log_q, log_p, opts, [s[:r] for s in scratch], wanted)
        rows.put(loss, chunk.loss)
        if coef is None:
            continue
        # s = z / T: d l / d z = (d l / d s) / T
        scale = rows.take(coef).div(opts.temperature).unsqueeze(1)
        for model, x, grad in zip(models, hidden, (chunk.student, chunk.teacher), strict=True):
            if grad is not None:
                model.absorb(rows, x, grad, scale)
    if keep is not None:
        loss = torch.where(keep, loss, 0)  # rows kept in the pass (under compile) that do not count
    return PassResult(loss, models[0].grads, models[1].grads)


def coefficients(
    grad_output: torch.Tensor, reduction: str, keep: torch.Tensor | None, n: int, acc: torch.dtype
) -> torch.Tensor:
    """``d output / d l_n`` times ``grad_output`` for every row ``(N,)``: 0 on rows that do not count."""
    g = grad_output.to(acc)
    if reduction == "none":
        g = g.reshape(n)
    elif reduction == "mean":
        g = g / counted(keep, n, g)
    g = g.expand(n)
    return g if keep is None else torch.where(keep, g, 0)


def counted(keep: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """The number of rows that count, as a 0-dim tensor of ``like``'s dtype and device (never read on the host)."""
    if keep is None:
        return torch.full((), n, dtype=like.dtype, device=like.device)
    return keep.sum().to(like.dtype)


def kept_rows(keep: torch.Tensor | None, opts: DistillationOptions) -> torch.Tensor | None:
    """Row numbers of the rows that count (None: every row), when rows that do not are dropped."""
    if keep is None or not opts.drop_ignored:
        return None
    rows = keep.nonzero().squeeze(1)  # reads the mask: eager mode only
    return None if rows.shape[0] == keep.shape[0] else rows


class LinearDistillationFunction(torch.autograd.Function):
    """``loss = D(softmax(t), softmax(s))`` of ``s = (h_s W_s.T + b_s) / T``, ``t = (h_t W_t.T + b_t) / T``
    over row chunks, with its own backward. Inputs are flat: ``(N, H_s)``, ``(V, H_s)``, ``(V,)`` for
    the student, the same for the teacher, and ``keep (N,)`` (None: every row counts)."""

    @staticmethod
    def forward(
        ctx: Any,
        hs: torch.Tensor,
        ws: torch.Tensor,
        bs: torch.Tensor | None,
        ht: torch.Tensor,
        wt: torch.Tensor,
        bt: torch.Tensor | None,
        keep: torch.Tensor | None,
        opts: DistillationOptions,
    ) -> torch.Tensor:
        n = hs.shape[0]
        wanted = Wanted(*ctx.needs_input_grad[:6])
        kept = kept_rows(keep, opts)
        coef = None
        if opts.reduction != "none" and opts.gradient_expected:
            coef = coefficients(torch.ones((), device=hs.device), opts.reduction, keep, n, opts.acc)
        student, teacher = Projection(hs, ws, bs), Projection(ht, wt, bt)
        result = distillation_pass(student, teacher, keep, kept, opts, coef=coef, wanted=wanted)
        inputs = (hs, ws, bs, ht, wt, bt)
        precomputed = as_inputs(result, inputs) if coef is not None else []
        ctx.opts = opts
        ctx.save_for_backward(*inputs, keep, kept, *precomputed)
        if opts.reduction == "none":
            out = result.loss
        elif opts.reduction == "sum":
            out = result.loss.sum()
        else:
            out = result.loss.sum() / counted(keep, n, result.loss)
        return out.to(opts.out_dtype)

    @staticmethod
    @first_order
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        opts: DistillationOptions = ctx.opts
        hs, ws, bs, ht, wt, bt, keep, kept, *precomputed = ctx.saved_tensors
        handed = hand_over(ctx, precomputed, grad_output) if precomputed else None
        if handed is not None:
            return (*handed, None, None)
        # 'none', or a second backward through a retained graph: run the pass again from the inputs
        coef = coefficients(grad_output, opts.reduction, keep, hs.shape[0], opts.acc)
        wanted = Wanted(*ctx.needs_input_grad[:6])
        result = distillation_pass(
            Projection(hs, ws, bs), Projection(ht, wt, bt), keep, kept, opts, coef=coef, wanted=wanted
        )
        return (*as_inputs(result, (hs, ws, bs, ht, wt, bt)), None, None)


def as_inputs(result: PassResult, inputs: tuple[torch.Tensor | None, ...]) -> list[torch.Tensor | None]:
    """The pass's gradients in the dtypes of the inputs they belong to."""
    grads = (*result.student, *result.teacher)
    return [g.to(t.dtype) if g is not None and t is not None else g for g, t in zip(grads, inputs, strict=True)]
