"""Negative log-likelihood of class-index targets, and the target checks ``cross_entropy`` shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._common import (
    ieee_arithmetic,
    optional_array,
    require_array,
    require_floating,
    require_int,
    shape_str,
)
from ._reduction import apply_reduction, reduction_grad, resolve_reduction


@dataclass(frozen=True)
class ClassIndexBatch:
    """Validated class-index inputs, laid out with the class axis last.

    An unbatched ``(C,)`` input becomes a batch of one, so ``scores`` is ``(P..., C)`` for every rank
    and ``labels``/``kept`` are ``(P...)``; ``loss_shape`` is the shape of the unreduced loss.
    """

    scores: np.ndarray
    labels: np.ndarray
    kept: np.ndarray
    weight: np.ndarray
    loss_shape: tuple[int, ...]
    input_shape: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        """``C``, the length of the class axis."""
        return self.scores.shape[-1]

    @property
    def total_weight(self) -> np.ndarray:
        """``W = Σ_n w[y_n]·m_n``, the weighted count of kept positions that ``'mean'`` divides by."""
        return np.sum(self.weight[self.labels[self.kept]])

    def to_input_layout(self, per_class: np.ndarray) -> np.ndarray:
        """An array laid out like ``scores``, put back in the layout of the original input."""
        return np.moveaxis(per_class, -1, 1).reshape(self.input_shape)


def class_index_batch(
    fn_name: str, input: object, target: object, weight: object, ignore_index: object
) -> ClassIndexBatch:
    """Check ``input``, class-index ``target`` and ``weight`` as torch's ``nll_loss`` does, and lay them out.

    Raises ValueError for a 0-d input or mismatched batch sizes, RuntimeError for a wrongly shaped or
    typed target or weight, NotImplementedError for non-floating input, and IndexError for a kept
    target outside ``[0, C)``.
    """
    x = require_array(input, "input", fn_name)
    t = require_array(target, "target", fn_name)
    w = optional_array(weight, "weight", fn_name)
    ignore_index = require_int(ignore_index, "ignore_index", fn_name)
    if x.ndim == 0:
        raise ValueError("Expected 1 or more dimensions (got 0)")
    target_batch = t.shape[0] if t.ndim else 0
    if x.ndim != 1 and x.shape[0] != target_batch:
        raise ValueError(f"Expected input batch_size ({x.shape[0]}) to match target batch_size ({target_batch}).")
    if x.ndim <= 2:
        if t.ndim > 1:
            raise RuntimeError(
                f"0D or 1D target tensor expected, multi-target not supported (got target of shape "
                f"{shape_str(t.shape)} for input of shape {shape_str(x.shape)})"
            )
        if x.ndim == 1 and t.ndim == 1 and t.shape[0] != 1:
            raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {t.shape[0]}")
        if x.ndim == 2 and t.ndim == 0:
            raise RuntimeError(f"size mismatch (got input: {shape_str(x.shape)}, target: {shape_str(t.shape)})")
        if t.dtype not in (np.int64, np.uint8):
            raise RuntimeError(f"expected target dtype to be int64 or uint8, but got {t.dtype}")
    else:
        expected = (x.shape[0], *x.shape[2:])
        if t.shape != expected:
            raise RuntimeError(f"Expected target size {shape_str(expected)}, got {shape_str(t.shape)}")
        if t.dtype != np.int64:
            raise RuntimeError(f"expected target dtype int64 for {x.ndim}-d input, but got {t.dtype}")
    num_classes = x.shape[0 if x.ndim == 1 else 1]
    if w is not None and w.shape != (num_classes,):
        raise RuntimeError(
            f"weight tensor should be defined either for all {num_classes} classes or no classes "
            f"but got weight tensor of shape: {shape_str(w.shape)}"
        )
    require_floating(x, fn_name)
    if w is not None and w.dtype != x.dtype:
        raise RuntimeError(f"expected weight of the input's dtype {x.dtype}, but found {w.dtype}")

    scores = np.moveaxis(x if x.ndim > 1 else x[np.newaxis], 1, -1)
    labels = t.astype(np.int64).reshape(scores.shape[:-1])
    kept = labels != ignore_index
    out_of_range = kept & ((labels < 0) | (labels >= num_classes))
    if out_of_range.any():
        raise IndexError(f"Target {labels[out_of_range][0]} is out of bounds.")
    return ClassIndexBatch(
        scores=scores,
        labels=labels,
        kept=kept,
        weight=np.ones(num_classes, x.dtype) if w is None else w,
        loss_shape=() if x.ndim == 1 else t.shape,
        input_shape=x.shape,
    )


def picked_loss(batch: ClassIndexBatch, log_probs: np.ndarray) -> np.ndarray:
    """``ℓ_n = -w[y_n]·log_probs[n, y_n]·m_n`` (exactly 0 where the target is ignored), ``loss_shape``."""
    loss = np.zeros(batch.labels.shape, log_probs.dtype)
    labels = batch.labels[batch.kept]
    loss[batch.kept] = -batch.weight[labels] * log_probs[batch.kept, labels]
    return loss.reshape(batch.loss_shape)


def picked_loss_grad(batch: ClassIndexBatch, upstream: np.ndarray) -> np.ndarray:
    """``∂/∂log_probs[n, c] = -w[c]·[c = y_n]·m_n·G_n`` for per-position upstream gradients ``G``."""
    grad = np.zeros(batch.scores.shape, upstream.dtype)
    labels = batch.labels[batch.kept]
    grad[batch.kept, labels] = -batch.weight[labels] * upstream.reshape(batch.labels.shape)[batch.kept]
    return grad


@ieee_arithmetic
def nll_loss(
    input: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> np.ndarray:
    r"""Negative log-likelihood of class-index targets, given log-probabilities.

    Same arguments and results as ``torch.nn.functional.nll_loss``. Unreduced, per position ``n``:

    .. math:: \ell_n = -w_{y_n}\, z_{n, y_n} \cdot m_n, \qquad m_n = [y_n \ne \mathrm{ignore\_index}]

    ``'sum'`` is :math:`\sum_n \ell_n`; ``'mean'`` divides it by the total weight
    :math:`W = \sum_n w_{y_n} m_n` (the number of kept positions when unweighted), so it is ``nan`` when
    every target is ignored. ``w`` is all ones without ``weight``. Ignored targets may lie outside
    ``[0, C)``; every other target must lie inside (else IndexError).

    Shape:
        ======  =============================================================
        input   ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``: log-probabilities ``z``
        target  ``()`` or ``(1,)``, ``(N,)`` or ``(N, d1, ..., dK)``: int64 class indices
                (uint8 allowed for 1- and 2-d input)
        weight  ``(C,)``, the input's dtype
        output  ``'none'``: ``()``, ``(N,)`` or ``(N, d1, ..., dK)``; else ``()``
        ======  =============================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import nll_loss
        >>> z = np.log(np.array([[0.6, 0.2, 0.2], [0.1, 0.8, 0.1]]))
        >>> nll_loss(z, np.array([0, 1]), reduction="none")
        array([0.51082562, 0.22314355])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    batch = class_index_batch("nll_loss", input, target, weight, ignore_index)
    return apply_reduction(picked_loss(batch, batch.scores), mode, batch.total_weight)


@ieee_arithmetic
def nll_loss_grad(
    input: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> np.ndarray:
    r"""Gradient of :func:`nll_loss` with respect to ``input``, for an upstream gradient ``g``.

    .. math:: \frac{\partial L}{\partial z_{n,c}} = -w_c\,[c = y_n]\, m_n\, G_n

    with :math:`G_n = g_n` (``'none'``), :math:`g` (``'sum'``) or :math:`g / W` (``'mean'``). Ignored
    positions get exactly 0, so with every target ignored the ``'mean'`` gradient is 0, not ``nan``.

    Shape:
        ===========  ======================================================
        input        as :func:`nll_loss`
        target       as :func:`nll_loss`
        grad_output  a scalar, or (``'none'``) the shape of the unreduced loss
        output       the input's shape and dtype
        ===========  ======================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import nll_loss_grad
        >>> nll_loss_grad(np.zeros((2, 3)), np.array([0, 2]))
        array([[-0.5,  0. ,  0. ],
               [ 0. ,  0. , -0.5]])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    batch = class_index_batch("nll_loss", input, target, weight, ignore_index)
    upstream = reduction_grad(grad_output, mode, batch.total_weight, batch.loss_shape, batch.scores.dtype)
    return batch.to_input_layout(picked_loss_grad(batch, upstream))
