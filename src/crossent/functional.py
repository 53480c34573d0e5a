"""The functional API: torch.nn.functional's cross-entropy family, keyword for keyword.

Each function validates its arguments (``crossent._checks``), resolves the reduction
(``crossent._reduction``), picks an implementation (``crossent._dispatch``) and makes one call into
an autograd Function with a hand-written backward (``crossent.ops``) or a Triton kernel.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from typing import Any, Literal, overload

import torch

from crossent import _checks, _dispatch
from crossent._dispatch import Impl
from crossent._reduction import KLReduction, Reduction, divisor
from crossent._reduction import resolve as resolve_reduction
from crossent._results import CrossEntropyStats, pack
from crossent._seam import public_op
from crossent.ops._elementwise import repeats
from crossent.ops._layout import accumulation_dtype
from crossent.ops.binary import BinaryCrossEntropy, BinaryCrossEntropyWithLogits
from crossent.ops.cross_entropy import CrossEntropyCall, CrossEntropyFunction
from crossent.ops.kl_div import KLDiv
from crossent.ops.nll_loss import NLLLoss
from crossent.ops.softmax import LogSoftmax, Softmax

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_div",
    "log_softmax",
    "nll_loss",
    "softmax",
]


def _triton() -> Any:
    """The Triton backend, imported only once the dispatcher has chosen it."""
    return importlib.import_module("crossent.triton")


PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def dtensor_entry(*tensors: object) -> Any:
    """``crossent.distributed.dtensor`` when one of ``tensors`` is a DTensor, else None.

    Plain tensors and parameters cost one type check each and never import it (nor
    ``torch.distributed.tensor``, before which no DTensor exists); under ``torch.compile`` the check
    folds away.
    """
    for t in tensors:
        if type(t) not in PLAIN_TENSORS:
            dtensor = sys.modules.get("torch.distributed.tensor")
            if dtensor is None or not any(isinstance(x, dtensor.DTensor) for x in tensors):
                return None
            return importlib.import_module("crossent.distributed.dtensor")
    return None


@overload
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    inplace_backward: bool = False,
    impl: Impl = "auto",
    process_group: torch.distributed.ProcessGroup | None = None,
    normalizer: torch.Tensor | float | None = None,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: Literal[False] = False,
    _modulation: tuple[float, float] = (0.0, 0.0),
    _loss_dtype: torch.dtype | None = None,
) -> torch.Tensor: ...


@overload
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    inplace_backward: bool = False,
    impl: Impl = "auto",
    process_group: torch.distributed.ProcessGroup | None = None,
    normalizer: torch.Tensor | float | None = None,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: Literal[True],
    _modulation: tuple[float, float] = (0.0, 0.0),
    _loss_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, CrossEntropyStats]: ...


@public_op("cross_entropy")
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    inplace_backward: bool = False,
    impl: Impl = "auto",
    process_group: torch.distributed.ProcessGroup | None = None,
    normalizer: torch.Tensor | float | None = None,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: bool = False,
    _modulation: tuple[float, float] = (0.0, 0.0),
    _loss_dtype: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, CrossEntropyStats]:
    r"""Cross-entropy between logits and class indices or class probabilities.

    With class indices ``y`` (``m_n = [y_n != ignore_index]``, ``eps = label_smoothing``)::

        l_n = m_n * [(1 - eps) * w[y_n] * (lse_n - x[n, y_n]) + (eps / C) * sum_c w[c] * (lse_n - x[n, c])]

    where ``lse_n = log sum_c exp(x[n, c])``. With class probabilities ``t`` (same shape as ``input``)::

        l_n = -sum_c w[c] * q[n, c] * log_softmax(x)[n, c],    q = (1 - eps) * t + eps / C

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides that
    sum by ``W = sum_n m_n * w[y_n]`` for class indices (0/0 = nan when every target is ignored) and
    by the number of positions ``N * d1 * ... * dK`` for probabilities (weights do not enter).

    Language-model options (crossent's own; the defaults leave torch's loss untouched) act on the
    logits first, and ``l_n`` is then the loss of ``z``::

        z = softcap * tanh(x / softcap) / temperature        (softcap None: z = x / temperature)

    ``z_loss`` adds ``z_loss * lse_n**2`` (``lse`` of ``z``) at counted positions (not ignored). It is
    reduced like the loss but never class-weighted: ``'mean'`` divides it by the number of counted
    positions (by ``normalizer`` when one is given), ``'sum'`` sums it, ``'none'`` adds it to each
    position's value. ``return_stats=True`` returns ``(loss, stats)``, a :class:`crossent.CrossEntropyStats`
    formed in the loss's own pass over the logits: ``stats.lse`` and ``stats.entropy``
    (``-sum_c p_c log p_c`` of ``p = softmax(z)``), per position, shaped like ``'none'``, 0 at ignored
    positions and differentiable; ``stats.z_loss``, the reduced z-loss term included in the loss, and
    ``stats.accuracy``, the fraction of counted positions whose first argmax of ``z`` is the target
    (None for probabilities), both detached. Under ``return_stats`` the backward forms the gradient
    anew when ``lse`` or the entropy receive a gradient (the forward's covers the loss alone).

    Args:
        input: logits.
        target: class indices (int64, or uint8 for inputs of at most 2 dims) or probabilities.
        weight: per-class rescaling ``w``, shape ``(C,)``; all ones when None.
        size_average, reduce: deprecated; when either is given it overrides ``reduction``.
        ignore_index: class-index targets equal to it contribute nothing (probabilities need it < 0).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        label_smoothing: ``eps`` in ``[0, 1]``; negative values and NaN count as 0.
        inplace_backward: write the gradient into ``input``'s own storage instead of a new buffer
            (saves one logits-sized allocation). ``input`` is overwritten by the backward pass: use it
            only when nothing reads the logits afterwards. Refused for leaf tensors that require grad;
            autograd's version counter catches any other saved use of ``input``. Ignored (a fresh
            buffer is used) for non-contiguous inputs. Without it, a call that expects a gradient forms
            the gradient in the forward (from the same exponentials) and keeps it for the backward.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'`` (see ``crossent._dispatch``): ``'auto'`` runs
            the native kernels on CPU tensors and Triton on CUDA tensors where they support the call.
        process_group: vocab parallelism: ``input`` (and probability targets, ``weight``) hold this
            rank's contiguous slice of the classes (``weight`` may also be all ``V`` of them), targets
            are global ids; every rank gets the loss
            of the whole vocabulary (``crossent.distributed.vocab_parallel_cross_entropy``: three
            collectives in the forward, none in the backward).
        normalizer: return ``sum_n l_n / normalizer`` (for ``'mean'`` and ``'sum'``; a number or a
            one-element tensor, never read on the host), e.g. the global count of kept targets from
            ``crossent.distributed.count_targets`` for exact gradient accumulation.
        softcap: Gemma-style logit soft-capping ``softcap * tanh(x / softcap)``, a number > 0 or None.
        temperature: divides the (capped) logits, a number > 0.
        z_loss: the coefficient of the z-loss term ``lse**2``, >= 0.
        return_stats: return ``(loss, stats)`` with the log-sum-exp, entropy, z-loss and accuracy.
        _modulation: ``(gamma, epsilon)`` of :func:`crossent.focal_loss` and
            :func:`crossent.poly1_cross_entropy`, which set it.
        _loss_dtype: the dtype of the returned loss when it is not ``input``'s (the loss is accumulated in
            float32 for half inputs either way); ``crossent.transformers`` sets float32 for half logits,
            the dtype transformers' loss returns. A call with it runs on the native or torch backend.

    DTensor: when ``input`` is a ``torch.distributed.tensor.DTensor`` sharded on the class dimension
    (``Shard(1)``, ``Shard(0)`` for ``(C,)``) on one mesh dimension, the loss is the vocab-parallel
    loss of the local shards over that mesh dimension's process group (as ``process_group=`` above),
    returned as a DTensor replicated on the mesh; the gradient reaches ``input`` with its placements.
    A DTensor replicated on the mesh is computed locally. Targets and weights may be plain tensors
    or DTensors; see ``docs/guide/dtensor.md``.

    Shape:
        ============  ====================  ==========================================
        input         target                output (``'none'``)
        ============  ====================  ==========================================
        ``(C,)``      ``()`` or ``(C,)``    ``()``
        ``(N, C)``    ``(N,)`` or ``(N, C)``  ``(N,)``
        ``(N, C, d1, ..., dK)``  ``(N, d1, ..., dK)`` or same as input  ``(N, d1, ..., dK)``
        ============  ====================  ==========================================

    Note:
        Sums and the ``'mean'`` denominator are accumulated in float32 for float16/bfloat16 inputs
        (float64 for float64). torch's CPU kernel accumulates them in the input dtype, so for
        half-precision inputs with more than 256 (bfloat16) or 2048 (float16) positions crossent is
        closer to the float64 result than torch is.

    Example:
        >>> import torch, crossent
        >>> x = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]])
        >>> crossent.cross_entropy(x, torch.tensor([0, 1, 1]), reduction="none")
        tensor([1.3133, 0.1269, 0.1269])
        >>> loss, stats = crossent.cross_entropy(x, torch.tensor([0, 1, 1]), z_loss=1e-4, return_stats=True)
        >>> stats.lse, stats.accuracy
        (tensor([2.3133, 3.1269, 3.1269]), tensor(0.6667))
    """
    if (entry := dtensor_entry(input)) is not None:  # the loss of a DTensor's local shards
        return entry.cross_entropy(
            cross_entropy,
            input,
            target,
            weight,
            size_average,
            ignore_index,
            reduce,
            reduction,
            label_smoothing,
            inplace_backward=inplace_backward,
            impl=impl,
            process_group=process_group,
            normalizer=normalizer,
            softcap=softcap,
            temperature=temperature,
            z_loss=z_loss,
            return_stats=return_stats,
            _modulation=_modulation,
        )
    reduction = resolve_reduction(reduction, size_average, reduce)
    options = _checks.logit_options("cross_entropy", softcap, temperature, z_loss, return_stats)
    options = options._replace(focal_gamma=_modulation[0], poly_epsilon=_modulation[1])
    if process_group is not None:
        if inplace_backward or impl == "triton" or options.modulated:
            raise ValueError(
                "the vocab-parallel cross_entropy (process_group=..., or a DTensor sharded on the classes) takes "
                "neither inplace_backward, impl='triton' nor a focal or poly-1 loss (use "
                "linear_cross_entropy(process_group=..., focal_gamma=...))"
            )
        from crossent.distributed import vocab_parallel_cross_entropy

        return vocab_parallel_cross_entropy(
            input,
            target,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            process_group=process_group,
            normalizer=normalizer,
            softcap=softcap,
            temperature=temperature,
            z_loss=z_loss,
            return_stats=return_stats,
        )
    _checks.check_tensor(input, "cross_entropy_loss", "input", 1)
    _checks.check_tensor(target, "cross_entropy_loss", "target", 2)
    _checks.check_normalizer(normalizer, reduction, "cross_entropy")
    ignore_index, eps, weight = _checks.cross_entropy_arguments(
        input, target, weight, ignore_index, label_smoothing, reduction, targets=False
    )
    probability = input.shape == target.shape
    gradient_expected = torch.is_grad_enabled() and input.requires_grad
    inplace_backward = _checks.in_place_gradient(input, inplace_backward, gradient_expected)
    spec = _dispatch.spec_of(
        input,
        probability=probability,
        weight=weight is not None,
        weight_requires_grad=weight is not None and weight.requires_grad,
        label_smoothing=eps,
        reduction=reduction,
        inplace_backward=inplace_backward,
        inner=math.prod(input.shape[2:]),
        classes=input.shape[0 if input.dim() == 1 else 1],
        same_dtype=not probability or all(t.dtype == input.dtype for t in (target, weight) if t is not None),
        target_requires_grad=probability and target.requires_grad,
        options=options.names,
        loss_dtype=_loss_dtype,
    )
    backend = _dispatch.resolve("cross_entropy", impl, input.device, spec)
    if backend != "native" and not probability:
        _checks.class_targets(target, spec.classes, ignore_index)
    if backend == "triton":
        if normalizer is None:
            return _triton().cross_entropy(input, target, weight, ignore_index, reduction, eps, inplace_backward)
        total = _triton().cross_entropy(input, target, weight, ignore_index, "sum", eps, inplace_backward)
        acc = accumulation_dtype(total.dtype)
        return (total.to(acc) / divisor(normalizer, acc)).to(total.dtype)
    call = CrossEntropyCall(
        reduction,
        ignore_index,
        eps,
        probability,
        inplace_backward,
        gradient_expected,
        backend == "native",
        options,
        _loss_dtype,
    )
    return pack(CrossEntropyFunction.apply(input, target, weight, normalizer, call, None), probability, False)


@public_op("nll_loss")
def nll_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    r"""Negative log-likelihood of class indices under log-probabilities ``z``.

    ::

        l_n = -w[y_n] * z[n, y_n] * m_n,    m_n = [y_n != ignore_index]

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides it by
    ``W = sum_n m_n * w[y_n]`` (a weighted mean; 0/0 = nan when every target is ignored).

    Args:
        input: log-probabilities (nothing checks that they are).
        target: class indices in ``[0, C)`` (int64; uint8 for inputs of at most 2 dims).
        weight: per-class rescaling, shape ``(C,)``, same dtype as ``input``.
        size_average, reduce: deprecated; when either is given it overrides ``reduction``.
        ignore_index: targets equal to it contribute nothing.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'``.

    Shape:
        ========================  ======================  ======================
        input                     target                  output (``'none'``)
        ========================  ======================  ======================
        ``(C,)``                  ``()`` or ``(1,)``      ``()``
        ``(N, C)``                ``(N,)``                ``(N,)``
        ``(N, C, d1, ..., dK)``   ``(N, d1, ..., dK)``    ``(N, d1, ..., dK)``
        ========================  ======================  ======================

    Example:
        >>> import torch, crossent
        >>> z = torch.log(torch.tensor([[0.6, 0.2, 0.2]]))
        >>> crossent.nll_loss(z, torch.tensor([0]))
        tensor(0.5108)
    """
    reduction = resolve_reduction(reduction, size_average, reduce)
    _checks.check_tensor(input, "nll_loss_nd", "input", 1)
    _checks.check_tensor(target, "nll_loss_nd", "target", 2)
    weight = _checks.check_optional_tensor(weight, "nll_loss_nd", "weight", 3)
    ignore_index = _checks.check_int(ignore_index, "nll_loss_nd", "ignore_index", 5, symint=True)
    _checks.class_index_shapes(input, target)
    num_classes = input.shape[0 if input.dim() == 1 else 1]
    weight = _checks.class_weight(weight, input, num_classes)
    _checks.class_index_dtypes(input, target, weight, "nll_loss_out_frame")
    spec = _dispatch.spec_of(
        input, weight=weight is not None, reduction=reduction, inner=math.prod(input.shape[2:]), classes=num_classes
    )
    backend = _dispatch.resolve("nll_loss", impl, input.device, spec)
    if backend != "native":
        _checks.class_targets(target, num_classes, ignore_index)
    if backend == "triton":
        return _triton().nll_loss(input, target, weight, ignore_index, reduction)
    return NLLLoss.apply(input, target, weight, reduction, ignore_index, backend == "native")


def _normalise(
    name: Literal["log_softmax", "softmax"],
    function: type[torch.autograd.Function],
    x: torch.Tensor,
    dim: int | None,
    stacklevel: int,
    dtype: torch.dtype | None,
    impl: Impl,
) -> torch.Tensor:
    """softmax / log_softmax: validate, cast, dispatch, apply."""
    _checks.check_tensor(x, name, "input", 0)
    d = _checks.softmax_dim(name, x, dim, stacklevel)
    if dtype is not None:
        x = x.to(_checks.check_dtype(dtype, name))
    kernel = _checks.softmax_kernel_name(x, d)
    _checks.check_floating(x, kernel if name == "log_softmax" else kernel.replace("log_softmax", "softmax"))
    classes = x.shape[d] if x.dim() else 1
    spec = _dispatch.spec_of(x, inner=math.prod(x.shape[d + 1 :]), classes=classes)
    backend = _dispatch.resolve(name, impl, x.device, spec)
    if backend == "triton":
        result: torch.Tensor = getattr(_triton(), name)(x, d)
        return result
    return function.apply(x, d, backend == "native")


@public_op("log_softmax")
def log_softmax(
    input: torch.Tensor,
    dim: int | None = None,
    _stacklevel: int = 3,
    dtype: torch.dtype | None = None,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    r"""Log of the softmax along ``dim``: ``y_i = x_i - log sum_j exp(x_j)``.

    Computed as ``(x_i - m) - log sum_j exp(x_j - m)`` with ``m = max_j x_j``, so large logits are
    exact (``[1000, 0, -1000] -> [0, -1000, -2000]``). A slice with ``+inf`` or NaN, or with only
    ``-inf``, is all NaN, as in torch.

    Args:
        input: any floating tensor (any dtype with ``dtype=``).
        dim: the dimension to normalise; ``None`` warns and picks 0 for 0-, 1- and 3-dim inputs, else 1.
        dtype: cast ``input`` to this dtype first; the output has it.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'``.

    Shape:
        ======  =====================
        input   ``(*)``
        output  ``(*)``, same as input
        ======  =====================

    Example:
        >>> import torch, crossent
        >>> crossent.log_softmax(torch.tensor([1.0, 2.0]), dim=0)
        tensor([-1.3133, -0.3133])
    """
    return _normalise(
        "log_softmax", LogSoftmax, input, dim, _stacklevel + 2, dtype, impl
    )  # past public_op's wrapper too


@public_op("softmax")
def softmax(
    input: torch.Tensor,
    dim: int | None = None,
    _stacklevel: int = 3,
    dtype: torch.dtype | None = None,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    r"""Softmax along ``dim``: ``y_i = exp(x_i - m) / sum_j exp(x_j - m)``, ``m = max_j x_j``.

    Args:
        input: any floating tensor (any dtype with ``dtype=``).
        dim: the dimension to normalise; ``None`` warns and picks 0 for 0-, 1- and 3-dim inputs, else 1.
        dtype: cast ``input`` to this dtype first; the output has it.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'``.

    Shape:
        ======  =====================
        input   ``(*)``
        output  ``(*)``, same as input
        ======  =====================

    Example:
        >>> import torch, crossent
        >>> crossent.softmax(torch.tensor([1.0, 3.0]), dim=0)
        tensor([0.1192, 0.8808])
    """
    return _normalise("softmax", Softmax, input, dim, _stacklevel + 2, dtype, impl)  # past public_op's wrapper too


@public_op("binary_cross_entropy")
def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    r"""Binary cross-entropy between probabilities ``x`` and targets ``y`` in ``[0, 1]``.

    ::

        l = -w * [y * max(log x, -100) + (1 - y) * max(log(1 - x), -100)]

    Each log is clamped at -100 before it is multiplied, so the loss is finite (at most ``100 w``)
    and ``0 * log 0`` is 0. The gradient ``w (x - y) / max(x (1 - x), 1e-12)`` is not clamped the same
    way (it is -1e12 at ``x = 0, y = 1``), as in torch.

    Reductions: ``'none'``, ``'sum'``, and ``'mean'`` = sum / number of elements (weights are not
    normalised).

    Args:
        input: probabilities in ``[0, 1]`` (checked; NaN fails).
        target: same shape and dtype as ``input``, values in ``[0, 1]`` (checked).
        weight: rescaling broadcast to ``input``'s shape (it may not enlarge it).
        size_average, reduce: deprecated; when either is given it overrides ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'``.

    Shape:
        ======  ================================
        input   ``(*)``
        target  ``(*)``, same as input
        output  scalar, or ``(*)`` for ``'none'``
        ======  ================================

    Example:
        >>> import torch, crossent
        >>> crossent.binary_cross_entropy(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0]))
        tensor(0.1643)
    """
    reduction = resolve_reduction(reduction, size_average, reduce)
    _checks.binary_cross_entropy_arguments(input, target, weight, values=False)
    spec = _dispatch.spec_of(
        input,
        weight=weight is not None,
        weight_requires_grad=weight is not None and weight.requires_grad,
        reduction=reduction,
        repeating=repeats(weight, input.shape),
    )
    backend = _dispatch.resolve("binary_cross_entropy", impl, input.device, spec)
    if backend != "native":
        _checks.unit_interval(input, "input")
        _checks.unit_interval(target, "target")
    if backend == "triton":
        return _triton().binary_cross_entropy(input, target, weight, reduction)
    return BinaryCrossEntropy.apply(input, target, weight, reduction, backend == "native")


@public_op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
    pos_weight: torch.Tensor | None = None,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    r"""Binary cross-entropy on logits, stable for any ``x``.

    ::

        l = w * [(1 - y) * x - (1 + (pw - 1) * y) * log_sigmoid(x)]
          = -w * [pw * y * log sigmoid(x) + (1 - y) * log sigmoid(-x)]

    with ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``. ``pw`` (``pos_weight``) weighs the
    positive term: ``pw > 1`` raises recall, ``pw < 1`` precision. Targets are not range-checked
    (soft labels are fine).

    Reductions: ``'none'``, ``'sum'``, and ``'mean'`` = sum / number of elements.

    Args:
        input: logits.
        target: same shape as ``input``; floating. The result has the target's dtype, as in torch.
        weight: rescaling broadcast to ``input``'s shape (it may not enlarge it).
        size_average, reduce: deprecated; when either is given it overrides ``reduction``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        pos_weight: positive-class weight broadcast against ``target``, typically ``(C,)`` for ``(N, C)``.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'``.

    Shape:
        ==========  ================================
        input       ``(*)``
        target      ``(*)``, same as input
        pos_weight  broadcastable to ``(*)``, e.g. ``(C,)`` or ``(C, 1, 1)``
        output      scalar, or ``(*)`` for ``'none'``
        ==========  ================================

    Example:
        >>> import torch, crossent
        >>> x = torch.tensor([[2.0, -1.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> crossent.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor([3.0, 1.0]))
        tensor(0.3470)
    """
    reduction = resolve_reduction(reduction, size_average, reduce)
    weight, pos_weight = _checks.binary_cross_entropy_with_logits_arguments(input, target, weight, pos_weight)
    spec = _dispatch.spec_of(
        input,
        dtype=torch.promote_types(input.dtype, target.dtype),
        weight=weight is not None,
        pos_weight=pos_weight is not None,
        weight_requires_grad=any(w is not None and w.requires_grad for w in (weight, pos_weight)),
        reduction=reduction,
        same_dtype=input.dtype == target.dtype,
        repeating=repeats(weight, input.shape) and repeats(pos_weight, input.shape),
    )
    backend = _dispatch.resolve("binary_cross_entropy_with_logits", impl, input.device, spec)
    if backend == "triton":
        return _triton().binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)
    return BinaryCrossEntropyWithLogits.apply(input, target, weight, pos_weight, reduction, backend == "native")


@public_op("kl_div")
def kl_div(
    input: torch.Tensor,
    target: torch.Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: KLReduction = "mean",
    log_target: bool = False,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    r"""Kullback-Leibler divergence ``KL(P || Q)`` with ``input = log Q`` and ``target = P``.

    ::

        l = target * (log target - input)             (xlogy: 0 where target = 0)
        l = exp(target) * (target - input)            with log_target=True

    ``input`` and ``target`` broadcast against each other.

    Reductions: ``'none'``; ``'sum'``; ``'batchmean'`` = sum / ``input.size(0)`` (the mathematical
    KL per sample); ``'mean'`` = sum / number of elements, which also divides by the support size
    and warns, as torch does.

    Args:
        input: log-probabilities of the model.
        target: probabilities (or log-probabilities with ``log_target=True``).
        size_average, reduce: deprecated; when either is given it overrides ``reduction``.
        reduction: ``'none'`` | ``'batchmean'`` | ``'sum'`` | ``'mean'``.
        log_target: whether ``target`` is given in log space.
        impl: ``'auto'`` | ``'torch'`` | ``'native'`` | ``'triton'``.

    Shape:
        ======  ==============================================
        input   ``(*)``
        target  broadcastable with input
        output  scalar, or the broadcast shape for ``'none'``
        ======  ==============================================

    Example:
        >>> import torch, crossent
        >>> q = torch.log(torch.tensor([[0.5, 0.5]])); p = torch.tensor([[0.9, 0.1]])
        >>> crossent.kl_div(q, p, reduction="batchmean")
        tensor(0.3681)
    """
    legacy = size_average is not None or reduce is not None
    batchmean_quirk = legacy and reduction == "batchmean"
    reduction = resolve_reduction(reduction, size_average, reduce, allow_batchmean=True)
    if reduction == "mean" and not legacy:
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning,
            stacklevel=2,
        )
    _checks.kl_div_arguments(input, target, log_target)
    spec = _dispatch.spec_of(
        input,
        reduction=reduction,
        log_target=log_target,
        same_dtype=input.dtype == target.dtype,
        repeating=input.shape == target.shape,
    )
    backend = _dispatch.resolve("kl_div", impl, input.device, spec)
    if backend == "triton":
        out = _triton().kl_div(input, target, reduction, log_target)
    else:
        out = KLDiv.apply(input, target, reduction, log_target, backend == "native")
    if batchmean_quirk and input.dim() != 0:
        # torch computes the legacy reduction, then still divides by the batch size
        out = out / input.size(0)
    return out
