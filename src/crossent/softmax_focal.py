"""The softmax focal loss and poly-1 cross-entropy: cross-entropy reshaped by each position's target probability.

Both are :func:`crossent.cross_entropy` with ``f(log p)`` where cross-entropy has ``-log p``, formed in
the engine's pass from the statistics the loss already has (``log p_c = (x_c - k) - log S``), so they
need no pass of their own; they run on crossent's PyTorch path (the native and Triton kernels do not
take them), and under autocast, torch.func and compile as ``cross_entropy`` does.
"""

from __future__ import annotations

import torch

from crossent import _checks
from crossent._engine import ClassIndex
from crossent._reduction import Reduction
from crossent._reduction import resolve as resolve_reduction
from crossent.functional import cross_entropy
from crossent.ops._layout import accumulation_dtype, as_ncs

__all__ = ["focal_loss", "poly1_cross_entropy"]


def focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""The softmax (multi-class) focal loss of RetinaNet: cross-entropy that down-weights easy positions.

    With ``p = softmax(x)``, class indices ``y`` (``m_n = [y_n != ignore_index]``) and no label smoothing,
    RetinaNet's form::

        l_n = -m_n alpha[y_n] w[y_n] (1 - p_t)**gamma log p_t,    p_t = p[n, y_n]

    With label smoothing, or class probabilities ``t``, each class is weighed by its target mass
    ``q`` (``q = (1 - eps) onehot(y) + eps / C``, or ``(1 - eps) t + eps / C``), as cross-entropy's
    ``-sum_c w_c q_c log p_c`` is::

        l_n = -m_n sum_c alpha[c] w[c] q[n, c] (1 - p[n, c])**gamma log p[n, c]

    ``alpha`` is a per-class tensor ``(C,)`` or one float for every class (None: 1). It weighs the
    classes inside the loss but, unlike ``weight``, does not enter the ``'mean'`` divisor. ``1 - p`` is
    formed as ``-expm1(log p)`` from the log-sum-exp, so the loss stays finite and exact for confident
    predictions (logits of 1e4), where ``(1 - softmax(x)) ** gamma * -log_softmax(x)`` rounds to 0 or
    NaN. ``gamma = 0`` with no ``alpha`` is exactly ``cross_entropy``.

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides that sum by
    ``cross_entropy``'s divisor: ``sum_n m_n w[y_n]`` for class indices (the count of kept positions
    without ``weight``), the number of positions for probabilities. ``alpha`` does not enter it.

    Args:
        input: logits ``(N, C)``, ``(C,)`` or ``(N, C, d1, ..., dK)``.
        target: class indices, or class probabilities of the input's shape.
        gamma: the focusing exponent, ``>= 0``.
        alpha: per-class factors ``(C,)``, one float, or None.
        weight, ignore_index, reduction, label_smoothing: as in :func:`crossent.cross_entropy`.

    Shape:
        ===========================  =====================  =========================
        input                        target                 output (``'none'``)
        ===========================  =====================  =========================
        ``(C,)``                     ``()``                 ``()``
        ``(N, C)``                   ``(N,)``               ``(N,)``
        ``(N, C, d1, ..., dK)``      ``(N, d1, ..., dK)``   ``(N, d1, ..., dK)``
        any of the above             same as input          as for class indices
        ===========================  =====================  =========================

    Example:
        >>> import torch, crossent
        >>> x = torch.tensor([[4.0, 0.0, 0.0], [0.5, 0.0, 0.0]])  # an easy and a hard position
        >>> crossent.focal_loss(x, torch.tensor([0, 0]), reduction="none")
        tensor([4.4924e-05, 2.3867e-01])
        >>> crossent.cross_entropy(x, torch.tensor([0, 0]), reduction="none")
        tensor([0.0360, 0.7944])
    """
    _checks.focal_arguments("focal_loss", input, target, gamma, "gamma")
    reduction = resolve_reduction(reduction)
    weight, normalizer = _alpha(input, target, alpha, weight, ignore_index, reduction)
    return cross_entropy(
        input,
        target,
        weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        normalizer=normalizer,
        _modulation=(float(gamma), 0.0),
    )


def poly1_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    epsilon: float = 1.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""Poly-1 cross-entropy (PolyLoss): cross-entropy plus ``epsilon`` times the first polynomial term.

    With ``p = softmax(x)``, class indices ``y`` (``m_n = [y_n != ignore_index]``), ``p_t = p[n, y_n]``
    and ``ce_n`` the per-position loss of :func:`crossent.cross_entropy`, without label smoothing::

        l_n = ce_n + epsilon * m_n * w[y_n] * (1 - p_t)

    With label smoothing, or class probabilities, the target mass ``q`` weighs each class's term (as
    in :func:`focal_loss`); unweighted, that is the paper's ``CE(q) + epsilon (1 - sum_c q_c p_c)``::

        l_n = m_n sum_c w[c] q[n, c] (-log p[n, c] + epsilon (1 - p[n, c]))

    The poly term is weighted like the cross-entropy it extends (``w = 1`` without ``weight``), and
    ``1 - p`` is ``-expm1(log p)``. ``epsilon = 0`` is exactly ``cross_entropy``; ``epsilon`` may be
    negative (the paper uses -1 to 1), down to -1 where the loss stays a proper one.

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides that sum by
    ``cross_entropy``'s divisor (``sum_n m_n w[y_n]``, or the number of positions for probabilities).

    Args:
        input: logits ``(N, C)``, ``(C,)`` or ``(N, C, d1, ..., dK)``.
        target: class indices, or class probabilities of the input's shape.
        epsilon: the coefficient of ``(1 - p_t)``, ``>= -1``.
        weight, ignore_index, reduction, label_smoothing: as in :func:`crossent.cross_entropy`.

    Shape:
        ===========================  =====================  =========================
        input                        target                 output (``'none'``)
        ===========================  =====================  =========================
        ``(C,)``                     ``()``                 ``()``
        ``(N, C)``                   ``(N,)``               ``(N,)``
        ``(N, C, d1, ..., dK)``      ``(N, d1, ..., dK)``   ``(N, d1, ..., dK)``
        any of the above             same as input          as for class indices
        ===========================  =====================  =========================

    Example:
        >>> import torch, crossent
        >>> x = torch.tensor([[4.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
        >>> crossent.poly1_cross_entropy(x, torch.tensor([0, 0]), reduction="none")
        tensor([0.0713, 1.3425])
    """
    _checks.focal_arguments("poly1_cross_entropy", input, target, epsilon, "epsilon", low=-1.0)
    return cross_entropy(
        input,
        target,
        weight,
        ignore_index=ignore_index,
        reduction=resolve_reduction(reduction),
        label_smoothing=label_smoothing,
        _modulation=(0.0, float(epsilon)),
    )


def _alpha(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float | torch.Tensor | None,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``alpha`` folded into the class weight, so that every path (and kernel) that takes a weight takes
    it; for a class-index ``'mean'``, the divisor of ``weight`` alone (alpha must not enter it), by the
    engine's rule, as a normalizer: ``(weight, normalizer)``."""
    if alpha is None:
        return weight, None
    classes = input.shape[0 if input.dim() == 1 else 1]
    factors = _checks.focal_alpha(alpha, classes, input)
    combined = factors if weight is None else factors * weight
    if reduction != "mean" or input.shape == target.shape:
        return combined, None  # a probability target's 'mean' divides by the positions: alpha is not in it
    if weight is not None:
        _checks.class_targets(target, classes, ignore_index)  # before the divisor reads w[y]
    n, _, s = as_ncs(input).shape
    acc = accumulation_dtype(input.dtype)
    return combined, ClassIndex.build(target.reshape(n, s), weight, ignore_index, 0.0, classes, acc).mean_divisor()
