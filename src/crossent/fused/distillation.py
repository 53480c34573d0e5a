"""``linear_distillation``: a divergence between two models' softmaxes, from hidden states, without logits."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, cast

import torch

from crossent._reduction import Reduction
from crossent.fused._distillation_function import (
    DIVERGENCES,
    SCRATCH_BUFFERS,
    DistillationOptions,
    Divergence,
    LinearDistillationFunction,
)
from crossent.fused._options import default_workspace_bytes
from crossent.ops._layout import accumulation_dtype, result_dtype

__all__ = ["linear_distillation"]

_FN = "linear_distillation"
_REDUCTIONS: tuple[Reduction, ...] = ("none", "mean", "sum")


def linear_distillation(
    student_input: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_input: torch.Tensor,
    teacher_weight: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    divergence: Divergence = "kl",
    beta: float | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Divergence between a teacher's and a student's softmax over ``V`` classes, from their hidden states.

    With ``s = (student_input @ student_weight.T + student_bias) / T`` and ``t`` the same for the
    teacher (``T = temperature``), ``q = softmax(s)`` (student) and ``p = softmax(t)`` (teacher), each
    row's loss is, with ``0 log 0 = 0``::

        'kl':          l_n = KL(p || q) = sum_c p_c (log p_c - log q_c)
        'reverse_kl':  l_n = KL(q || p) = sum_c q_c (log q_c - log p_c)
        'jsd':         l_n = beta KL(p || m) + (1 - beta) KL(q || m),   m = beta p + (1 - beta) q

    ``'kl'`` is the usual distillation loss: it equals
    ``F.kl_div(log_softmax(s), log_softmax(t), log_target=True, reduction='none').sum(-1)``. ``'jsd'``
    with ``beta = 0.5`` is the symmetric Jensen-Shannon divergence. Everything is computed in log
    space (``log m = logaddexp(log p + log beta, log q + log(1 - beta))``), so logits of +-1e4 and
    ``-inf`` (a masked class) stay accurate, and finite wherever the divergence is. The loss is
    **not** multiplied by ``T ** 2``; multiply it yourself to follow Hinton et al.

    With ``target``, rows where ``target == ignore_index`` contribute 0 and are not counted (only the
    mask is read from it). Reductions: ``'none'`` returns ``l`` of the leading shape; ``'sum'``
    returns ``sum_n l_n``; ``'mean'`` divides that sum by the number of counted rows (``kl_div``'s
    ``'batchmean'`` when no row is ignored; 0/0 = nan when every row is).

    The rows are processed in chunks, and only one chunk's logits of both models (and their
    gradients) exist at a time. Gradients are hand-written, first-order, for the student's input,
    weight and bias, and for the teacher's when they require grad. As in
    :func:`crossent.linear_cross_entropy`, ``'mean'`` and ``'sum'`` form the gradients in the forward
    and the backward only rescales them; ``'none'`` saves only the inputs and recomputes in the
    backward; under ``torch.no_grad()`` only the loss is computed. Half-precision inputs run the
    softmax and divergence math in float32, and their weight and bias gradients accumulate in
    float32, rounded once. Rows that are not counted are dropped before any matmul (in eager mode;
    under ``torch.compile`` they are kept and masked). The two models may differ in hidden size and
    dtype; the loss has their promoted dtype. Under ``torch.autocast`` the matmuls run in the
    autocast dtype and the loss is returned in float32.

    Args:
        student_input: the student's hidden states ``(*, H_s)``; leading dims are flattened to ``N`` rows.
        student_weight: the student's classifier ``(V, H_s)``.
        teacher_input: the teacher's hidden states ``(*, H_t)``, with the student's leading dims.
        teacher_weight: the teacher's classifier ``(V, H_t)``.
        target: class ids of the leading shape, used only as a mask; None: every row counts.
        student_bias, teacher_bias: ``(V,)``.
        divergence: ``'kl'`` | ``'reverse_kl'`` | ``'jsd'``.
        beta: the teacher's weight in ``'jsd'``, in (0, 1); None means 0.5. Only ``'jsd'`` takes it.
        temperature: ``T > 0``, dividing both models' logits.
        ignore_index: the target value of rows that do not count.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        chunk_size: rows per chunk; default: as many as fit in a workspace of a quarter of both
            classifiers' size as float32, within [16 MiB, 256 MiB].

    Shape:
        ================================  ================================  ==================  ===================
        student_input, student_weight     teacher_input, teacher_weight     target              output (``'none'``)
        ================================  ================================  ==================  ===================
        ``(H_s,)``, ``(V, H_s)``          ``(H_t,)``, ``(V, H_t)``          ``()``              ``()``
        ``(N, H_s)``, ``(V, H_s)``        ``(N, H_t)``, ``(V, H_t)``        ``(N,)``            ``(N,)``
        ``(B, T, ..., H_s)``              ``(B, T, ..., H_t)``              ``(B, T, ...)``     ``(B, T, ...)``
        ================================  ================================  ==================  ===================

    Example:
        >>> import torch, crossent
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> W_s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]); W_t = 2 * W_s
        >>> crossent.linear_distillation(h, W_s, h, W_t, reduction="none")
        tensor([0.0989, 0.0989])
        >>> crossent.linear_distillation(h, W_s, h, W_t, torch.tensor([5, -100]))  # the second row is ignored
        tensor(0.0989)
    """
    settings = check_settings(divergence, beta, temperature, ignore_index, reduction, chunk_size)
    models = (student_input, student_weight, student_bias, teacher_input, teacher_weight, teacher_bias)
    leading = _check_tensors(*models, target)
    device_type = student_input.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        # as torch's autocast does for a linear layer and a loss: the matmuls in the autocast dtype,
        # the loss in float32; the body runs with autocast off so that no internal op is re-cast
        lower = torch.get_autocast_dtype(device_type)
        hs, ws, ht, wt = (
            _autocast(t, lower, device_type) for t in (student_input, student_weight, teacher_input, teacher_weight)
        )
        bs, bt = (None if b is None else _autocast(b, lower, device_type) for b in (student_bias, teacher_bias))
        with torch.autocast(device_type, enabled=False):
            return _fused(hs, ws, bs, ht, wt, bt, target, leading, settings, out_dtype=torch.float32)
    return _fused(*models, target, leading, settings, out_dtype=None)


class Settings(NamedTuple):
    """A call's non-tensor arguments, checked."""

    divergence: Divergence
    beta: float
    temperature: float
    ignore_index: int
    reduction: Reduction
    chunk_size: int | None


def check_settings(
    divergence: object, beta: object, temperature: object, ignore_index: object, reduction: object, chunk_size: object
) -> Settings:
    """The non-tensor arguments, or a ValueError / TypeError naming the one that is wrong."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"{_FN}: divergence must be one of {', '.join(map(repr, DIVERGENCES))}, got {divergence!r}")
    if divergence != "jsd" and beta is not None:
        raise ValueError(f"{_FN}: beta is the weight of the teacher in divergence='jsd'; {divergence!r} takes none")
    if beta is None:
        beta = 0.5
    if not _is_real(beta) or not 0 < float(beta) < 1:  # type: ignore[arg-type]
        raise ValueError(f"{_FN}: beta must be a number in (0, 1), got {beta!r}")
    if not _is_real(temperature) or not 0 < float(temperature) < math.inf:  # type: ignore[arg-type]
        raise ValueError(f"{_FN}: temperature must be a positive finite number, got {temperature!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"{_FN}: ignore_index must be an int, got {type(ignore_index).__name__}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{_FN}: chunk_size must be a positive int, got {chunk_size!r}")
    return Settings(
        cast(Divergence, divergence),
        float(beta),  # type: ignore[arg-type]
        float(temperature),  # type: ignore[arg-type]
        int(ignore_index),
        cast(Reduction, reduction),
        chunk_size,
    )


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_tensors(
    hs: torch.Tensor,
    ws: torch.Tensor,
    bs: torch.Tensor | None,
    ht: torch.Tensor,
    wt: torch.Tensor,
    bt: torch.Tensor | None,
    target: torch.Tensor | None,
) -> tuple[int, ...]:
    """The checks of both models' shapes and dtypes, and the target's; returns the leading shape."""
    arguments = [  # name, value, position (None: keyword-only, optional)
        ("student_input", hs, 1),
        ("student_weight", ws, 2),
        ("teacher_input", ht, 3),
        ("teacher_weight", wt, 4),
        ("target", target, 5),
        ("student_bias", bs, None),
        ("teacher_bias", bt, None),
    ]
    for name, value, position in arguments:
        if isinstance(value, torch.Tensor) or (value is None and (position is None or name == "target")):
            continue
        where = "" if position is None else f" (position {position})"
        raise TypeError(f"{_FN}(): argument '{name}'{where} must be Tensor, not {type(value).__name__}")
    _check_model("student", hs, ws, bs)
    _check_model("teacher", ht, wt, bt)
    if ws.shape[0] != wt.shape[0]:
        raise ValueError(
            f"{_FN}: student_weight and teacher_weight must have the same number of classes (rows), "
            f"got shapes {tuple(ws.shape)} and {tuple(wt.shape)}"
        )
    if ws.shape[0] == 0:
        raise ValueError(f"{_FN}: expected at least one class, got student_weight of shape {tuple(ws.shape)}")
    leading = tuple(hs.shape[:-1])
    if tuple(ht.shape[:-1]) != leading:
        raise ValueError(
            f"{_FN}: student_input {tuple(hs.shape)} and teacher_input {tuple(ht.shape)} must have the same "
            "leading dims (one row of each per position)"
        )
    if target is not None:
        if tuple(target.shape) != leading:
            raise ValueError(
                f"{_FN}: expected target of shape {leading} (the inputs' leading dims), got {tuple(target.shape)}"
            )
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise RuntimeError(f"{_FN}: expected target of class ids (an integer dtype), got {target.dtype}")
    return leading


def _check_model(who: str, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    """One model's projection: ``h (*, H)``, ``w (V, H)``, ``b (V,)``, one floating dtype."""
    if h.dim() < 1:
        raise RuntimeError(f"{_FN}: expected {who}_input with dimensionality 1 or more, got {h.dim()}")
    if w.dim() != 2:
        raise RuntimeError(f"{_FN}: expected a 2-d {who}_weight (V, H), got shape {tuple(w.shape)}")
    if h.shape[-1] != w.shape[1]:
        raise RuntimeError(
            f"{_FN}: expected equal {who}_input and {who}_weight last dimensions (in_features), "
            f"got shapes {tuple(h.shape)} and {tuple(w.shape)}"
        )
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise RuntimeError(f"{_FN}: expected {who}_bias of shape {(w.shape[0],)}, got {tuple(b.shape)}")
    if not h.is_floating_point():
        raise RuntimeError(f"{_FN}: expected a floating-point {who}_input, got {h.dtype}")
    for name, t in (("weight", w), ("bias", b)):
        if t is not None and t.dtype != h.dtype:
            raise RuntimeError(f"{_FN}: expected {who}_{name} of {who}_input's dtype {h.dtype}, got {t.dtype}")


def _autocast(t: torch.Tensor, dtype: torch.dtype, device_type: str) -> torch.Tensor:
    """``t`` as autocast hands it to a matmul: a floating tensor on its device cast (a differentiable
    cast, so the gradient comes back in ``t``'s dtype), float64 kept."""
    if t.is_floating_point() and t.dtype != torch.float64 and t.device.type == device_type:
        return t.to(dtype)
    return t


def _fused(
    hs: torch.Tensor,
    ws: torch.Tensor,
    bs: torch.Tensor | None,
    ht: torch.Tensor,
    wt: torch.Tensor,
    bt: torch.Tensor | None,
    target: torch.Tensor | None,
    leading: tuple[int, ...],
    settings: Settings,
    *,
    out_dtype: torch.dtype | None,
) -> torch.Tensor:
    """The checked call on flat rows, through the autograd Function."""
    n, v = math.prod(leading), ws.shape[0]
    tensors = [t for t in (hs, ws, bs, ht, wt, bt) if t is not None]
    acc = accumulation_dtype(hs.dtype, ht.dtype)
    opts = DistillationOptions(
        divergence=settings.divergence,
        beta=settings.beta,
        temperature=settings.temperature,
        reduction=settings.reduction,
        chunk_rows=chunk_rows(n, v, (hs.dtype, ht.dtype), acc, settings, ws.numel() + wt.numel()),
        acc=acc,
        out_dtype=out_dtype or result_dtype(hs.dtype, ht.dtype),
        gradient_expected=torch.is_grad_enabled() and any(t.requires_grad for t in tensors),
        drop_ignored=not torch.compiler.is_compiling(),
    )
    keep = None if target is None else target.reshape(n) != settings.ignore_index
    h_s, h_t = hs.reshape(n, hs.shape[-1]), ht.reshape(n, ht.shape[-1])
    out = LinearDistillationFunction.apply(h_s, ws, bs, h_t, wt, bt, keep, opts)
    return out.reshape(leading) if settings.reduction == "none" else out


def chunk_rows(
    n: int, v: int, dtypes: tuple[torch.dtype, torch.dtype], acc: torch.dtype, settings: Settings, weights_numel: int
) -> int:
    """Rows per chunk: ``chunk_size`` when given, else as many as fit in the default workspace budget.

    The budget is the fused cross-entropy's rule applied to both classifiers: a quarter of their size
    as float32 gradients, within [16 MiB, 256 MiB] (64 MiB, 157 rows at H = 1024, V = 32768). A
    chunk row holds, per class, both models' log-probabilities and the divergence's scratch buffers
    in ``acc``, each half-precision model's matmul output, and one byte of mask.
    """
    if settings.chunk_size is not None:
        return min(settings.chunk_size, max(n, 1))
    buffers = 2 + SCRATCH_BUFFERS[settings.divergence]
    row_bytes = v * (buffers * acc.itemsize + sum(d.itemsize for d in dtypes if d != acc) + 1)
    budget = default_workspace_bytes(weights_numel * accumulation_dtype(*dtypes).itemsize)
    return min(max(budget // row_bytes, 1), max(n, 1))
