"""Loss modules with torch.nn's constructor signatures: settings and buffers, one functional call.

``crossent.nn`` holds the loss modules and nothing else (``import crossent.nn as nn`` gives the losses,
not torch.nn's layers). A ``state_dict`` saved from the torch module loads into the crossent module and
back: ``weight`` and ``pos_weight`` are buffers under the same names.
"""

from __future__ import annotations

import typing as _typing

from torch import is_tensor as _is_tensor
from torch.nn import Module as _Module

from crossent import _checks, _reduction
from crossent import functional as _F
from crossent import sigmoid_focal as _sigmoid_focal
from crossent import softmax_focal as _softmax_focal
from crossent.fused.modules import LinearCrossEntropyLoss, LinearDistillationLoss

if _typing.TYPE_CHECKING:
    from torch import Tensor

    from crossent._reduction import KLReduction, Reduction
    from crossent._results import CrossEntropyStats

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "LinearDistillationLoss",
    "LogSoftmax",
    "NLLLoss",
    "Poly1CrossEntropyLoss",
    "SigmoidFocalLoss",
    "Softmax",
]


class _Loss(_Module):
    """Holds ``reduction``; legacy ``size_average`` / ``reduce`` are mapped once, here."""

    reduction: Reduction

    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = _reduction.legacy_reduction(size_average, reduce)
        else:
            self.reduction = reduction


class _WeightedLoss(_Loss):
    """A loss with a per-class ``weight`` buffer (absent from the state_dict when None)."""

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class NLLLoss(_WeightedLoss):
    """Module form of :func:`crossent.nll_loss`.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.NLLLoss()
        >>> loss(torch.tensor([[1.0, 2.0], [1.0, 3.0]]).log_softmax(1), torch.tensor([0, 1]))
        tensor(0.7201)
    """

    __constants__ = ["ignore_index", "reduction"]
    ignore_index: int

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`crossent.cross_entropy`, with its language-model options as keywords
    (``softcap``, ``temperature``, ``z_loss``, ``return_stats``; with ``return_stats=True`` the module
    returns ``(loss, stats)``).

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.CrossEntropyLoss(label_smoothing=0.1)
        >>> loss(torch.tensor([[1.0, 2.0]]), torch.tensor([1]))
        tensor(0.3633)
        >>> capped = crossent.nn.CrossEntropyLoss(softcap=1.0, z_loss=1e-3)
        >>> capped(torch.tensor([[1.0, 2.0]]), torch.tensor([1]))
        tensor(0.5995)
    """

    __constants__ = ["ignore_index", "reduction", "label_smoothing", "softcap", "temperature", "z_loss", "return_stats"]
    ignore_index: int
    label_smoothing: float

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        *,
        softcap: float | None = None,
        temperature: float = 1.0,
        z_loss: float = 0.0,
        return_stats: bool = False,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        _checks.logit_options("CrossEntropyLoss", softcap, temperature, z_loss, return_stats)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.softcap, self.temperature, self.z_loss, self.return_stats = softcap, temperature, z_loss, return_stats

    def forward(self, input: Tensor, target: Tensor) -> Tensor | tuple[Tensor, CrossEntropyStats]:
        return _F.cross_entropy(  # type: ignore[call-overload]
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            softcap=self.softcap,
            temperature=self.temperature,
            z_loss=self.z_loss,
            return_stats=self.return_stats,
        )


class FocalLoss(_WeightedLoss):
    """Module form of :func:`crossent.focal_loss`; ``weight`` and a tensor ``alpha`` are buffers.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.FocalLoss(gamma=2.0)
        >>> loss(torch.tensor([[4.0, 0.0, 0.0], [0.5, 0.0, 0.0]]), torch.tensor([0, 0]))
        tensor(0.1194)
    """

    __constants__ = ["gamma", "ignore_index", "reduction", "label_smoothing"]
    alpha: Tensor | float | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Tensor | None = None,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, None, None, reduction)
        if _is_tensor(alpha):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha
        self.gamma, self.ignore_index, self.label_smoothing = gamma, ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _softmax_focal.focal_loss(
            input,
            target,
            gamma=self.gamma,
            alpha=self.alpha,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class Poly1CrossEntropyLoss(_WeightedLoss):
    """Module form of :func:`crossent.poly1_cross_entropy`.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.Poly1CrossEntropyLoss(epsilon=1.0)
        >>> loss(torch.tensor([[4.0, 0.0, 0.0], [0.5, 0.0, 0.0]]), torch.tensor([0, 0]))
        tensor(0.7069)
    """

    __constants__ = ["epsilon", "ignore_index", "reduction", "label_smoothing"]

    def __init__(
        self,
        epsilon: float = 1.0,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, None, None, reduction)
        self.epsilon, self.ignore_index, self.label_smoothing = epsilon, ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _softmax_focal.poly1_cross_entropy(
            input,
            target,
            epsilon=self.epsilon,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class BCELoss(_WeightedLoss):
    """Module form of :func:`crossent.binary_cross_entropy`.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.BCELoss(reduction="sum")
        >>> loss(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0]))
        tensor(0.3285)
    """

    __constants__ = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Module form of :func:`crossent.binary_cross_entropy_with_logits`; ``pos_weight`` is a buffer.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0, 1.0]))
        >>> loss(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]]))
        tensor(0.3470)
    """

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: Reduction = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _F.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class SigmoidFocalLoss(_Module):
    """Module form of :func:`crossent.sigmoid_focal_loss`; ``pos_weight`` is a buffer.

    ::

        l = alpha_t * (1 - p_t)^gamma * binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction='none')

    with ``p_t = p t + (1 - p)(1 - t)``, ``p = sigmoid(x)``, ``alpha_t = alpha t + (1 - alpha)(1 - t)``
    (dropped for ``alpha < 0``). Reductions: ``'none'``; ``'sum'``; ``'mean'`` = sum / number of elements.

    Shape:
        ==========  ================================
        input       ``(*)``, logits
        target      ``(*)``, same as input
        pos_weight  broadcastable to ``(*)``, e.g. ``(C,)``
        output      scalar, or ``(*)`` for ``'none'``
        ==========  ================================

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.SigmoidFocalLoss(gamma=2.0, alpha=0.25)
        >>> loss(torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]]))
        tensor(0.0114)
    """

    __constants__ = ["gamma", "alpha", "reduction"]
    pos_weight: Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float = 0.25,
        reduction: Reduction = "mean",
        *,
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.gamma, self.alpha, self.reduction = gamma, alpha, reduction
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _sigmoid_focal.sigmoid_focal_loss(
            input, target, gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"


class KLDivLoss(_Loss):
    """Module form of :func:`crossent.kl_div`.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.KLDivLoss(reduction="batchmean")
        >>> loss(torch.tensor([[0.5, 0.2, 0.3]]).log(), torch.tensor([[1.0, 0.0, 0.0]]))  # log 2
        tensor(0.6931)
    """

    __constants__ = ["reduction"]
    log_target: bool

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: KLReduction = "mean",
        log_target: bool = False,
    ) -> None:
        super().__init__(size_average, reduce, reduction)  # type: ignore[arg-type]
        self.log_target = log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return _F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class _AlongDim(_Module):
    """A normalisation along ``dim`` (``None``: torch's deprecated implicit choice, with its warning)."""

    __constants__ = ["dim"]
    dim: int | None

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(_AlongDim):
    """Module form of :func:`crossent.log_softmax`.

    Example:
        >>> import torch, crossent
        >>> crossent.nn.LogSoftmax(dim=1)(torch.tensor([[1.0, 2.0]]))
        tensor([[-1.3133, -0.3133]])
    """

    def forward(self, input: Tensor) -> Tensor:
        return _F.log_softmax(input, self.dim, _stacklevel=5)


class Softmax(_AlongDim):
    """Module form of :func:`crossent.softmax`.

    Example:
        >>> import torch, crossent
        >>> crossent.nn.Softmax(dim=1)(torch.tensor([[1.0, 2.0]]))
        tensor([[0.2689, 0.7311]])
    """

    def forward(self, input: Tensor) -> Tensor:
        return _F.softmax(input, self.dim, _stacklevel=5)


del annotations  # the __future__ import's name: crossent.nn lists its losses only
