"""Loss modules with torch.nn's constructor signatures: settings and buffers, one functional call.

A ``state_dict`` saved from the torch module loads into the crossent module and back: ``weight`` and
``pos_weight`` are buffers under the same names.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crossent import _checks
from crossent import functional as F
from crossent._reduction import KLReduction, Reduction, legacy_reduction
from crossent._results import CrossEntropyStats
from crossent.fused.modules import LinearCrossEntropyLoss, LinearDistillationLoss

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "LinearDistillationLoss",
    "LogSoftmax",
    "NLLLoss",
    "Softmax",
]


class _Loss(torch.nn.Module):
    """Holds ``reduction``; legacy ``size_average`` / ``reduce`` are mapped once, here."""

    reduction: Reduction

    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = legacy_reduction(size_average, reduce)
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
    """Module form of :func:`crossent.nll_loss`."""

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
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


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
        return F.cross_entropy(  # type: ignore[call-overload]
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


class BCELoss(_WeightedLoss):
    """Module form of :func:`crossent.binary_cross_entropy`."""

    __constants__ = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Module form of :func:`crossent.binary_cross_entropy_with_logits`; ``pos_weight`` is a buffer."""

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
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class KLDivLoss(_Loss):
    """Module form of :func:`crossent.kl_div`."""

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
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class _AlongDim(torch.nn.Module):
    """A normalisation along ``dim`` (``None``: torch's deprecated implicit choice, with its warning)."""

    __constants__ = ["dim"]
    dim: int | None

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(_AlongDim):
    """Module form of :func:`crossent.log_softmax`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self.dim, _stacklevel=5)


class Softmax(_AlongDim):
    """Module form of :func:`crossent.softmax`."""

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self.dim, _stacklevel=5)
