"""Cross-entropy between logits and class-index or class-probability targets, and its gradient."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._common import (
    ieee_arithmetic,
    optional_array,
    require_array,
    require_floating,
    require_int,
    require_real,
    shape_str,
    wrap_dim,
)
from ._nll import ClassIndexBatch, class_index_batch, picked_loss, picked_loss_grad
from ._reduction import apply_reduction, reduction_grad, resolve_reduction
from ._softmax import log_softmax_backward, log_softmax_of


def _label_smoothing(value: object) -> float:
    """``ε`` as torch uses it: negative or NaN counts as 0, above 1 is a RuntimeError."""
    epsilon = require_real(value, "label_smoothing", "cross_entropy")
    if epsilon > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {epsilon}")
    return epsilon if epsilon > 0.0 else 0.0


def _class_dim(x: np.ndarray) -> int:
    """The class axis: 0 for an unbatched ``(C,)`` input, else 1."""
    return 0 if x.ndim == 1 else 1


@dataclass(frozen=True)
class _IndexTargets:
    """Class-index targets with their log-probabilities (classes last)."""

    batch: ClassIndexBatch
    log_probs: np.ndarray


def _index_targets(input: np.ndarray, target: np.ndarray, weight: object, ignore_index: object) -> _IndexTargets:
    # torch takes log_softmax before checking the target, so its errors come first.
    require_floating(input, "log_softmax")
    wrap_dim(_class_dim(input), input.ndim, "log_softmax")
    batch = class_index_batch("cross_entropy", input, target, weight, ignore_index)
    return _IndexTargets(batch, log_softmax_of(batch.scores, -1))


def _per_class(epsilon: float, num_classes: int) -> float:
    """``ε / C``; with no classes it is ``inf``, as torch's floating-point division gives."""
    return epsilon / num_classes if num_classes else float("inf")


@dataclass(frozen=True)
class _ProbTargets:
    """Class-probability targets, smoothed, with the input's log-probabilities (input layout)."""

    log_probs: np.ndarray
    smoothed: np.ndarray
    weight: np.ndarray
    class_dim: int

    @property
    def positions(self) -> int:
        """``numel(input) / C``, or 0 for an empty input (so that ``'mean'`` is ``0/0 = nan``)."""
        return self.log_probs.size // self.log_probs.shape[self.class_dim] if self.log_probs.size else 0


def _prob_targets(
    input: np.ndarray, target: np.ndarray, weight: object, ignore_index: object, label_smoothing: object
) -> _ProbTargets:
    if not np.issubdtype(target.dtype, np.floating):
        raise RuntimeError(f"Expected floating point type for target with class probabilities, got {target.dtype}")
    if require_int(ignore_index, "ignore_index", "cross_entropy") >= 0:
        raise RuntimeError(f"ignore_index is not supported for floating point target (got {ignore_index})")
    if input.ndim == 0:
        raise IndexError("Dimension specified as 1 but tensor has no dimensions")
    w = optional_array(weight, "weight", "cross_entropy")
    class_dim = _class_dim(input)
    num_classes = input.shape[class_dim]
    if w is not None and w.shape != (num_classes,):
        raise RuntimeError(
            f"cross_entropy: weight tensor should be defined either for all {num_classes} classes or no "
            f"classes but got weight tensor of shape: {shape_str(w.shape)}"
        )
    epsilon = _label_smoothing(label_smoothing)
    require_floating(input, "log_softmax")
    # Smoothing mixes the raw target with the uniform distribution; nothing is renormalised.
    smoothed = target if epsilon == 0.0 else target * (1 - epsilon) + _per_class(epsilon, num_classes)
    along_classes = [1] * input.ndim
    along_classes[class_dim] = num_classes
    class_weight = np.ones(num_classes, input.dtype) if w is None else w
    return _ProbTargets(
        log_probs=log_softmax_of(input, class_dim),
        smoothed=smoothed,
        weight=class_weight.reshape(along_classes),
        class_dim=class_dim,
    )


def _smoothing_loss(index: _IndexTargets) -> np.ndarray:
    """``-Σ_c w_c·lp[n, c]·m_n``: the uniform target's cross-entropy, 0 (even if NaN) where ignored."""
    batch = index.batch
    uniform_loss = -np.sum(index.log_probs * batch.weight, axis=-1)
    return np.where(batch.kept, uniform_loss, 0).reshape(batch.loss_shape)


@ieee_arithmetic
def cross_entropy(
    input: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> np.ndarray:
    r"""Cross-entropy between the softmax of logits ``x`` and class-index or class-probability targets.

    Same arguments and results as ``torch.nn.functional.cross_entropy``. With ``lp = log_softmax(x)``
    over the class axis, ``ε = label_smoothing`` and ``m_n = [y_n ≠ ignore_index]``, unreduced:

    * class indices ``y`` (target shape ≠ input shape):

      .. math:: \ell_n = (1-\varepsilon)\,(-w_{y_n} lp_{n,y_n}) m_n
                + \frac{\varepsilon}{C} \Big(-\sum_c w_c\, lp_{n,c}\Big) m_n

      ``'mean'`` divides the sum by :math:`W = \sum_n w_{y_n} m_n` (both terms), so it is ``nan`` when
      every target is ignored;
    * class probabilities ``t`` (target shape = input shape), with
      :math:`q = (1-\varepsilon)\,t + \varepsilon / C`:

      .. math:: \ell_n = -\sum_c w_c\, q_{n,c}\, lp_{n,c}

      ``'mean'`` divides the sum by the number of positions ``numel / C`` (weights do not enter), ``nan``
      for an empty input. ``ignore_index`` must be negative here; targets are not validated.

    ``'sum'`` is :math:`\sum_n \ell_n`. ``ε`` above 1 raises; negative or NaN ``ε`` counts as 0.

    Shape:
        ======  ====================================================================
        input   ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``: logits
        target  class indices: ``()``, ``(N,)`` or ``(N, d1, ..., dK)``, int64;
                class probabilities: the input's shape, floating
        weight  ``(C,)``
        output  ``'none'``: ``()``, ``(N,)`` or ``(N, d1, ..., dK)``; else ``()``. The input's dtype,
                or for probability targets the promotion of input, target and weight dtypes
        ======  ====================================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import cross_entropy
        >>> logits = np.log(np.array([[0.6, 0.2, 0.2]]))   # the cat/pig/dog prediction
        >>> print(round(float(cross_entropy(logits, np.array([0]))), 6))   # -log 0.6
        0.510826
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    x = require_array(input, "input", "cross_entropy")
    t = require_array(target, "target", "cross_entropy")
    if x.shape == t.shape:
        prob = _prob_targets(x, t, weight, ignore_index, label_smoothing)
        per_class = prob.log_probs * prob.smoothed * prob.weight
        return apply_reduction(-np.sum(per_class, axis=prob.class_dim), mode, prob.positions)
    epsilon = _label_smoothing(label_smoothing)
    index = _index_targets(x, t, weight, ignore_index)
    total_weight = index.batch.total_weight
    nll = apply_reduction(picked_loss(index.batch, index.log_probs), mode, total_weight)
    if epsilon == 0.0:
        return nll
    smoothing = apply_reduction(_smoothing_loss(index), mode, total_weight)
    return np.asarray((1 - epsilon) * nll + _per_class(epsilon, index.batch.num_classes) * smoothing)


@ieee_arithmetic
def cross_entropy_grad(
    input: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    weight: np.ndarray | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> np.ndarray:
    r"""Gradient of :func:`cross_entropy` with respect to the logits, for an upstream gradient ``g``.

    With :math:`p = \mathrm{softmax}(x)` and per-position upstream :math:`G_n` (``g_n`` for ``'none'``,
    ``g`` for ``'sum'``, ``g / W`` or ``g / (numel / C)`` for ``'mean'``):

    * class indices:

      .. math:: \frac{\partial L}{\partial x_{n,c}} = m_n G_n \Big[(1-\varepsilon)\, w_{y_n}
                (p_{n,c} - [c = y_n]) + \frac{\varepsilon}{C}\Big(p_{n,c} \sum_k w_k - w_c\Big)\Big]

    * class probabilities:

      .. math:: \frac{\partial L}{\partial x_{n,c}} = G_n \Big(p_{n,c} \sum_k w_k q_{n,k} - w_c q_{n,c}\Big)

    Both are computed as torch's autograd does, through the log-softmax:
    ``∂L/∂lp`` first, then ``∂L/∂x = ∂L/∂lp - p·Σ_c ∂L/∂lp`` (so a non-finite row yields ``nan`` even
    where its target is ignored, as in torch).

    Shape:
        ===========  ======================================================
        input        as :func:`cross_entropy`
        target       as :func:`cross_entropy`
        grad_output  a scalar, or (``'none'``) the shape of the unreduced loss
        output       the input's shape and dtype
        ===========  ======================================================

    Example:
        >>> import numpy as np
        >>> from crossent.numpy import cross_entropy_grad
        >>> cross_entropy_grad(np.log(np.array([[0.6, 0.2, 0.2]])), np.array([0]))   # p - onehot
        array([[-0.4,  0.2,  0.2]])
    """
    mode = resolve_reduction(reduction, size_average, reduce)
    x = require_array(input, "input", "cross_entropy")
    t = require_array(target, "target", "cross_entropy")
    if x.shape == t.shape:
        prob = _prob_targets(x, t, weight, ignore_index, label_smoothing)
        loss_shape = x.shape[: prob.class_dim] + x.shape[prob.class_dim + 1 :]
        dtype = np.result_type(prob.log_probs, prob.smoothed, prob.weight)
        upstream = reduction_grad(grad_output, mode, prob.positions, loss_shape, dtype)
        grad_log_probs = -np.expand_dims(upstream, prob.class_dim) * prob.smoothed * prob.weight
        return log_softmax_backward(grad_log_probs, prob.log_probs, prob.class_dim).astype(x.dtype)
    epsilon = _label_smoothing(label_smoothing)
    index = _index_targets(x, t, weight, ignore_index)
    batch = index.batch
    upstream = reduction_grad(grad_output, mode, batch.total_weight, batch.loss_shape, x.dtype)
    grad_log_probs = (1 - epsilon) * picked_loss_grad(batch, upstream)
    if epsilon > 0.0:
        kept_upstream = np.where(batch.kept, upstream.reshape(batch.kept.shape), 0)
        grad_log_probs += _per_class(epsilon, batch.num_classes) * -kept_upstream[..., None] * batch.weight
    return batch.to_input_layout(log_softmax_backward(grad_log_probs, index.log_probs, -1))
