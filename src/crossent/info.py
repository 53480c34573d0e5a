r"""Information theory behind cross-entropy: information content, entropy, cross-entropy, KL and JS.

crossent's losses each compute one quantity from information theory. This module computes the
quantities themselves, for discrete distributions laid out along ``dim``. Lists and NumPy arrays give
NumPy results; torch tensors give torch tensors, differentiable like any other torch expression.

The argument, step by step
--------------------------
1. **Information content.** An event of probability :math:`p` carries :math:`I(p) = -\log p`: a certain
   event tells nothing, a rare one tells a lot (:func:`self_information`).
2. **Entropy** is the expected information content, the uncertainty of a whole distribution
   (:func:`entropy`, :func:`binary_entropy`):

   .. math:: H(p) = -\sum_i p_i \log p_i

   A marksman who hits 10% of the time is more predictable than a coin (0.469 bits), one who hits
   99.9% of the time far more so (0.0114 bits).
3. **Cross-entropy** is the average information content when outcomes drawn from :math:`p` are
   coded with a model :math:`q` (:func:`cross_entropy`):

   .. math:: H(p, q) = -\sum_i p_i \log q_i

4. **KL divergence** is the extra cost of coding with :math:`q` instead of :math:`p`
   (:func:`kl_divergence`). It is at least 0, is 0 only when :math:`q = p`, and is not symmetric.
   Splitting the logarithm gives the decomposition

   .. math:: D_{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i}
             = H(p, q) - H(p), \qquad\text{so}\qquad H(p, q) = H(p) + D_{KL}(p \,\|\, q).

   The data distribution :math:`p` is fixed while training, so :math:`H(p)` is a constant, and
   minimising the cross-entropy over :math:`q` minimises :math:`D_{KL}(p \,\|\, q)`: it pulls the
   model towards the data.
5. **Cross-entropy against a one-hot target is the negative log-likelihood.** For a sample of class
   :math:`y`, :math:`p` is one-hot, :math:`H(p) = 0` and :math:`H(p, q) = -\log q_y`. A cat
   (``p = (1, 0, 0)`` over cat, pig, dog) predicted as ``q = (0.6, 0.2, 0.2)`` costs
   :math:`-\log 0.6 = 0.511` nats. Averaged over a data set this is
   :math:`-\frac{1}{m}\sum_k \log q(y_k)`, minus the mean log-likelihood, so minimising cross-entropy
   is maximum-likelihood estimation. :func:`crossent.cross_entropy` computes exactly this from logits,
   with :math:`q = \mathrm{softmax}(\text{logits})`.
6. **Jensen-Shannon divergence** symmetrises KL through the mixture :math:`m = (p + q)/2`
   (:func:`js_divergence`): :math:`JS = \tfrac12 D_{KL}(p\|m) + \tfrac12 D_{KL}(q\|m)`, which lies
   in :math:`[0, \log 2]`.

Conventions
-----------
* ``base=None`` gives nats, ``base=2`` bits; any base > 0 other than 1 works.
* :math:`0 \log 0 = 0`; :math:`q_i = 0` where :math:`p_i > 0` gives ``inf`` (cross-entropy, KL).
* Negative entries, ``p`` and ``q`` of different shapes, and a base <= 0 or equal to 1 raise
  ValueError. NaN propagates.
* Inputs are used as given: nothing is renormalised unless ``normalize=True``. This differs from
  ``scipy.stats.entropy``, which always divides ``pk`` (and ``qk``) by their sums, and whose ``axis``
  defaults to 0 where ``dim`` here defaults to -1: ``scipy.stats.entropy(pk, qk, axis=a)`` equals
  ``kl_divergence(pk, qk, dim=a, normalize=True)``.
* Tensor inputs are range-checked with one host synchronisation; keep these functions out of
  compiled or CUDA-graph regions. Gradients at entries equal to 0 can be infinite (the derivative of
  :math:`-p \log p` is unbounded there).

Example:
    >>> from crossent import info
    >>> p, q1, q2 = [1.0, 0.0, 0.0], [0.5, 0.2, 0.3], [0.8, 0.1, 0.1]
    >>> print(round(float(info.cross_entropy(p, q1)), 4), round(float(info.cross_entropy(p, q2)), 4))
    0.6931 0.2231
    >>> print(round(float(info.binary_entropy(0.1, base=2)), 4), round(float(info.binary_entropy(0.999, base=2)), 4))
    0.469 0.0114
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np
import numpy.typing as npt

from .numpy._common import ieee_arithmetic, xlogy

if TYPE_CHECKING:
    import torch

Distribution = Union[npt.ArrayLike, "torch.Tensor"]

__all__ = [
    "binary_entropy",
    "cross_entropy",
    "entropy",
    "js_divergence",
    "kl_divergence",
    "self_information",
]


@dataclass(frozen=True)
class _Ops:
    """The few array operations the formulas need, for one array library."""

    xlogy: Callable[[Any, Any], Any]
    log: Callable[[Any], Any]
    sum: Callable[[Any, int, bool], Any]
    finish: Callable[[Any], Any]


def _numpy_floats(value: object) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "biu":  # counts and indicator arrays
        return array.astype(np.float64)
    if array.dtype.kind != "f":
        raise TypeError(f"expected real numbers, got an array of dtype {array.dtype}")
    return array


_NUMPY = _Ops(
    xlogy=xlogy,
    log=np.log,
    sum=lambda x, dim, keepdim: np.sum(x, axis=dim, keepdims=keepdim),
    finish=np.asarray,
)


def _torch_module() -> Any:
    """torch, when a tensor was passed (so torch is already imported), else None."""
    return sys.modules.get("torch")


def _is_tensor(value: object) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(value, torch.Tensor)


def _operands(*values: object) -> tuple[_Ops, list[Any]]:
    """The library to compute in (torch if any value is a tensor) and the values converted to it."""
    tensors = [value for value in values if _is_tensor(value)]
    if not tensors:
        return _NUMPY, [_numpy_floats(value) for value in values]
    torch = _torch_module()
    device = cast(Any, tensors[0]).device

    def floats(value: object) -> Any:
        tensor = torch.as_tensor(value, device=device)
        if tensor.is_complex():
            raise TypeError(f"expected real numbers, got a tensor of dtype {tensor.dtype}")
        return tensor if tensor.is_floating_point() else tensor.to(torch.get_default_dtype())

    ops = _Ops(
        xlogy=torch.xlogy,
        log=torch.log,
        sum=lambda x, dim, keepdim: x.sum(dim=dim, keepdim=keepdim),
        finish=lambda x: x,
    )
    return ops, [floats(value) for value in values]


def _log_base(base: object) -> float | None:
    """``log(base)`` to divide nats by, or None for nats."""
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"base must be a real number or None, got {type(base).__name__}")
    value = float(base)
    if not (math.isfinite(value) and value > 0 and value != 1):
        raise ValueError(f"base must be a finite number > 0 other than 1, got {base}")
    return math.log(value)


def _in_base(ops: _Ops, nats: Any, log_base: float | None) -> Any:
    return ops.finish(nats if log_base is None else nats / log_base)


def _check_entries(values: Any, name: str, *, at_most_one: bool = False) -> None:
    """ValueError naming the first negative entry (or entry above 1, for probabilities)."""
    invalid = (values < 0) | (values > 1) if at_most_one else values < 0
    if invalid.any():
        wanted = "probabilities in [0, 1]" if at_most_one else "non-negative"
        raise ValueError(f"{name} must be {wanted}, found {float(values[invalid][0])}")


def _check_same_shape(p: Any, q: Any) -> None:
    if tuple(p.shape) != tuple(q.shape):
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")


def _distributions(ops: _Ops, values: list[Any], names: tuple[str, ...], dim: int, normalize: bool) -> list[Any]:
    """Checked distributions, divided by their sums along ``dim`` when ``normalize``."""
    for value, name in zip(values, names, strict=True):
        _check_entries(value, name)
    return [value / ops.sum(value, dim, True) for value in values] if normalize else values


def _surprisal(ops: _Ops, p: Any, q: Any) -> Any:
    """``p·log(1/q)``, 0 where ``p = 0``, inf where ``p > 0 = q``.

    Written as ``0 - p·log q``: a certain event gives +0 (not -0), and no ``1/q`` overflows to inf for
    a subnormal ``q``.
    """
    return 0.0 - ops.xlogy(p, q)


def _kl_nats(ops: _Ops, p: Any, q: Any, dim: int) -> Any:
    # p log(p/q) as p log p - p log q: 0 where p = 0 (even if q = 0), inf where p > 0 = q.
    return ops.sum(ops.xlogy(p, p) - ops.xlogy(p, q), dim, False)


@ieee_arithmetic
def self_information(p: Distribution, base: float | None = None) -> Any:
    r"""Information content of events with probabilities ``p``, elementwise.

    .. math:: I(p) = -\log p

    0 for a certain event, ``inf`` for an impossible one.

    Shape:
        ======  =================================
        p       any shape ``(*)``, entries in [0, 1]
        output  ``(*)``
        ======  =================================

    Example:
        >>> from crossent.info import self_information
        >>> self_information([1.0, 0.5, 0.25, 0.0], base=2)
        array([ 0.,  1.,  2., inf])
    """
    log_base = _log_base(base)
    ops, (probs,) = _operands(p)
    _check_entries(probs, "p", at_most_one=True)
    return _in_base(ops, 0.0 - ops.log(probs), log_base)  # 0 - log p: a certain event gives +0, not -0


@ieee_arithmetic
def entropy(p: Distribution, base: float | None = None, dim: int = -1, normalize: bool = False) -> Any:
    r"""Shannon entropy of the distributions ``p`` along ``dim``.

    .. math:: H(p) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0

    Shape:
        ======  ===================================================
        p       any shape with a ``dim`` axis, entries >= 0
        output  ``p``'s shape without ``dim``
        ======  ===================================================

    Example:
        >>> from crossent.info import entropy
        >>> print(entropy([0.5, 0.5], base=2), entropy([1.0, 0.0]))
        1.0 0.0
    """
    log_base = _log_base(base)
    ops, values = _operands(p)
    (probs,) = _distributions(ops, values, ("p",), dim, normalize)
    return _in_base(ops, ops.sum(_surprisal(ops, probs, probs), dim, False), log_base)


@ieee_arithmetic
def binary_entropy(p: Distribution, base: float | None = None) -> Any:
    r"""Entropy of Bernoulli distributions with success probabilities ``p``, elementwise.

    .. math:: H_b(p) = -p \log p - (1 - p) \log (1 - p)

    Shape:
        ======  =================================
        p       any shape ``(*)``, entries in [0, 1]
        output  ``(*)``
        ======  =================================

    Example:
        >>> from crossent.info import binary_entropy
        >>> binary_entropy([0.5, 0.1, 0.999], base=2).round(4)
        array([1.    , 0.469 , 0.0114])
    """
    log_base = _log_base(base)
    ops, (probs,) = _operands(p)
    _check_entries(probs, "p", at_most_one=True)
    return _in_base(ops, _surprisal(ops, probs, probs) + _surprisal(ops, 1 - probs, 1 - probs), log_base)


@ieee_arithmetic
def cross_entropy(
    p: Distribution, q: Distribution, base: float | None = None, dim: int = -1, normalize: bool = False
) -> Any:
    r"""Cross-entropy of the model distributions ``q`` relative to the true distributions ``p``.

    .. math:: H(p, q) = -\sum_i p_i \log q_i = H(p) + D_{KL}(p \,\|\, q)

    Terms with :math:`p_i = 0` are 0; :math:`q_i = 0` where :math:`p_i > 0` gives ``inf``. With a
    one-hot ``p`` this is the negative log-likelihood :math:`-\log q_y`.

    Shape:
        ======  ===================================================
        p       any shape with a ``dim`` axis, entries >= 0
        q       ``p``'s shape, entries >= 0
        output  ``p``'s shape without ``dim``
        ======  ===================================================

    Example:
        >>> import math
        >>> from crossent.info import cross_entropy
        >>> cat, prediction = [1, 0, 0], [0.6, 0.2, 0.2]   # cat, pig, dog
        >>> math.isclose(cross_entropy(cat, prediction), -math.log(0.6))
        True
    """
    log_base = _log_base(base)
    ops, values = _operands(p, q)
    _check_same_shape(*values)
    target, model = _distributions(ops, values, ("p", "q"), dim, normalize)
    return _in_base(ops, ops.sum(_surprisal(ops, target, model), dim, False), log_base)


@ieee_arithmetic
def kl_divergence(
    p: Distribution, q: Distribution, base: float | None = None, dim: int = -1, normalize: bool = False
) -> Any:
    r"""Kullback-Leibler divergence of ``q`` from ``p`` (relative entropy), along ``dim``.

    .. math:: D_{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i} = H(p, q) - H(p) \ \ge 0

    Terms with :math:`p_i = 0` are 0; :math:`q_i = 0` where :math:`p_i > 0` gives ``inf``. Summing
    ``scipy.special.rel_entr(p, q)`` gives the same numbers; ``scipy.stats.entropy(p, q)`` gives them
    for ``normalize=True``.

    Shape:
        ======  ===================================================
        p       any shape with a ``dim`` axis, entries >= 0
        q       ``p``'s shape, entries >= 0
        output  ``p``'s shape without ``dim``
        ======  ===================================================

    Example:
        >>> from crossent.info import kl_divergence
        >>> print(kl_divergence([0.5, 0.5], [0.25, 0.75], base=2).round(4), kl_divergence([0.5, 0.5], [1.0, 0.0]))
        0.2075 inf
    """
    log_base = _log_base(base)
    ops, values = _operands(p, q)
    _check_same_shape(*values)
    target, model = _distributions(ops, values, ("p", "q"), dim, normalize)
    return _in_base(ops, _kl_nats(ops, target, model, dim), log_base)


@ieee_arithmetic
def js_divergence(
    p: Distribution, q: Distribution, base: float | None = None, dim: int = -1, normalize: bool = False
) -> Any:
    r"""Jensen-Shannon divergence between ``p`` and ``q``, along ``dim``.

    .. math:: JS(p, q) = \tfrac12 D_{KL}(p \,\|\, m) + \tfrac12 D_{KL}(q \,\|\, m), \qquad m = \tfrac12 (p + q)

    Symmetric, finite, and between 0 and :math:`\log 2` (1 bit) for distributions. It is the square of
    ``scipy.spatial.distance.jensenshannon``, which always normalises its inputs.

    Shape:
        ======  ===================================================
        p       any shape with a ``dim`` axis, entries >= 0
        q       ``p``'s shape, entries >= 0
        output  ``p``'s shape without ``dim``
        ======  ===================================================

    Example:
        >>> from crossent.info import js_divergence
        >>> print(js_divergence([1.0, 0.0], [0.0, 1.0], base=2), js_divergence([0.3, 0.7], [0.3, 0.7]))
        1.0 0.0
    """
    log_base = _log_base(base)
    ops, values = _operands(p, q)
    _check_same_shape(*values)
    first, second = _distributions(ops, values, ("p", "q"), dim, normalize)
    mixture = (first + second) / 2
    nats = (_kl_nats(ops, first, mixture, dim) + _kl_nats(ops, second, mixture, dim)) / 2
    return _in_base(ops, nats, log_base)
