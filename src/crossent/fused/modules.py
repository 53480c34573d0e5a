"""``LinearCrossEntropyLoss``: torch 2.13's module of the same name, backed by the fused loss.

Its ``state_dict`` has torch's keys (``linear.weight``, ``linear.bias``, ``weight``), so checkpoints
load into either module.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from crossent._reduction import Reduction
from crossent.fused.functional import linear_cross_entropy

if TYPE_CHECKING:
    from torch.nn import LinearCrossEntropyOptions

__all__ = ["LinearCrossEntropyLoss"]


class LinearCrossEntropyLoss(torch.nn.Module):
    """A linear layer and cross-entropy in one: module form of :func:`crossent.linear_cross_entropy`.

    The classifier is ``self.linear`` (``torch.nn.Linear(in_features, C * prod(out_features))``); its
    weight is viewed as ``(C, *out_features, in_features)`` on each call. Arguments are those of
    ``torch.nn.LinearCrossEntropyLoss``, plus ``chunk_size`` / ``workspace_bytes`` (see the function).

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
    ) -> None:
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
        self.linear = torch.nn.Linear(
            in_features, math.prod(self.out_features, start=num_classes), bias=bias, device=device, dtype=dtype
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        shape = (self.num_classes, *self.out_features)
        bias = self.linear.bias.reshape(shape) if self.linear.bias is not None else None
        return linear_cross_entropy(
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
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
            f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
            f"reduction={self.reduction}, ignore_index={self.ignore_index}, "
            f"label_smoothing={self.label_smoothing}, options={self.options}"
        )
