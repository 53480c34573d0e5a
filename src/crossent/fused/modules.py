"""``LinearCrossEntropyLoss``: torch 2.13's module of the same name, backed by the fused loss; and
``LinearDistillationLoss``, the module form of ``linear_distillation``.

``LinearCrossEntropyLoss``'s ``state_dict`` has torch's keys (``linear.weight``, ``linear.bias``,
``weight``), so checkpoints load into either module.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from crossent import _checks
from crossent._reduction import Reduction
from crossent._results import CrossEntropyStats
from crossent.fused._distillation_function import Divergence
from crossent.fused.distillation import check_settings, linear_distillation
from crossent.fused.functional import linear_cross_entropy

if TYPE_CHECKING:
    from torch.nn import LinearCrossEntropyOptions

__all__ = ["LinearCrossEntropyLoss", "LinearDistillationLoss"]


class LinearCrossEntropyLoss(torch.nn.Module):
    """A linear layer and cross-entropy in one: module form of :func:`crossent.linear_cross_entropy`.

    The classifier is ``self.linear`` (``torch.nn.Linear(in_features, C * prod(out_features))``); its
    weight is viewed as ``(C, *out_features, in_features)`` on each call. Arguments are those of
    ``torch.nn.LinearCrossEntropyLoss``, plus ``chunk_size`` / ``workspace_bytes`` and the
    language-model options ``softcap``, ``temperature``, ``z_loss``, ``return_stats`` and ``shift``
    (see the function; with ``return_stats=True`` the module returns ``(loss, stats)``).

    Example:
        >>> import torch, crossent
        >>> loss = crossent.nn.LinearCrossEntropyLoss(4, 10, bias=True)
        >>> out = loss(torch.randn(8, 4, requires_grad=True), torch.randint(0, 10, (8,)))
        >>> out.backward()
    """

    __constants__ = ["num_classes", "out_features", "reduction", "ignore_index", "label_smoothing"]
    weight: Tensor | None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        reduction: Reduction = "mean",
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: LinearCrossEntropyOptions | None = None,
        chunk_size: int | None = None,
        workspace_bytes: int | None = None,
        softcap: float | None = None,
        temperature: float = 1.0,
        z_loss: float = 0.0,
        return_stats: bool = False,
        shift: int = 0,
    ) -> None:
        _checks.logit_options("LinearCrossEntropyLoss", softcap, temperature, z_loss, return_stats)
        if weight is not None and weight.shape != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}")
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise RuntimeError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        super().__init__()
        self.register_buffer("weight", weight)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.options = options
        self.chunk_size = chunk_size
        self.workspace_bytes = workspace_bytes
        self.softcap, self.temperature, self.z_loss, self.return_stats = softcap, temperature, z_loss, return_stats
        self.shift = shift
        self.linear = torch.nn.Linear(
            in_features, math.prod(self.out_features, start=num_classes), bias=bias, device=device, dtype=dtype
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor | tuple[Tensor, CrossEntropyStats]:
        shape = (self.num_classes, *self.out_features)
        bias = self.linear.bias.reshape(shape) if self.linear.bias is not None else None
        return linear_cross_entropy(  # type: ignore[call-overload, misc]
            input,
            self.linear.weight.reshape(*shape, self.linear.in_features),
            target,
            linear_bias=bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
            chunk_size=self.chunk_size,
            workspace_bytes=self.workspace_bytes,
            softcap=self.softcap,
            temperature=self.temperature,
            z_loss=self.z_loss,
            return_stats=self.return_stats,
            shift=self.shift,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
            f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
            f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
            f"label_smoothing={self.label_smoothing}, options={self.options}"
        )


class LinearDistillationLoss(torch.nn.Module):
    """A divergence between a teacher's and a student's softmax from their hidden states and classifiers:
    module form of :func:`crossent.linear_distillation`, whose keywords it takes (checked here).

    It holds no parameters: both models own their classifiers, passed to ``forward`` with the hidden
    states.

    Example:
        >>> import torch, crossent
        >>> loss = crossent.LinearDistillationLoss(divergence="jsd", temperature=2.0)
        >>> h_s, W_s = torch.randn(8, 4, requires_grad=True), torch.randn(10, 4, requires_grad=True)
        >>> out = loss(h_s, W_s, torch.randn(8, 6), torch.randn(10, 6))
        >>> out.backward()
    """

    __constants__ = ["divergence", "beta", "temperature", "ignore_index", "reduction", "chunk_size"]

    def __init__(
        self,
        *,
        divergence: Divergence = "kl",
        beta: float | None = None,
        temperature: float = 1.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        chunk_size: int | None = None,
    ) -> None:
        check_settings(divergence, beta, temperature, ignore_index, reduction, chunk_size)
        super().__init__()
        self.divergence = divergence
        self.beta = beta
        self.temperature = temperature
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.chunk_size = chunk_size

    def forward(
        self,
        student_input: Tensor,
        student_weight: Tensor,
        teacher_input: Tensor,
        teacher_weight: Tensor,
        target: Tensor | None = None,
        student_bias: Tensor | None = None,
        teacher_bias: Tensor | None = None,
    ) -> Tensor:
        return linear_distillation(
            student_input,
            student_weight,
            teacher_input,
            teacher_weight,
            target,
            student_bias=student_bias,
            teacher_bias=teacher_bias,
            divergence=self.divergence,
            beta=self.beta,
            temperature=self.temperature,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        beta = f", beta={self.beta}" if self.beta is not None else ""
        return (
            f"divergence={self.divergence!r}{beta}, temperature={self.temperature}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, chunk_size={self.chunk_size}"
        )
