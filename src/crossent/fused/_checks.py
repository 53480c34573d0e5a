"""Argument checks of ``linear_cross_entropy``, with torch 2.13's exception classes and messages.

In torch's order: the checks of ``F.linear_cross_entropy`` itself (ranks, ``in_features``, bias shape,
probabilities with ``ignore_index``), those of the linear layer (dtypes), then those of
``cross_entropy`` on the logits that the call stands for. The last run on a meta tensor of the logits'
shape, so validating allocates nothing of size ``N x C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossent import _checks

_CPP_TYPE_NAMES = {
    torch.float64: "double",
    torch.float32: "float",
    torch.float16: "c10::Half",
    torch.bfloat16: "c10::BFloat16",
    torch.int64: "long int",
    torch.int32: "int",
    torch.int16: "short int",
    torch.int8: "signed char",
    torch.uint8: "unsigned char",
    torch.bool: "bool",
    torch.complex64: "c10::complex<float>",
    torch.complex128: "c10::complex<double>",
}


@dataclass(frozen=True)
class LinearShapes:
    """The shapes a call stands for: ``logits = input @ W.T + b`` of shape ``(*batch, C, *out_features)``."""

    batch: tuple[int, ...]  # input.shape[:-1]
    in_features: int
    num_classes: int
    out_features: tuple[int, ...]  # (d1, ..., dK) of a K-dimensional loss
    probabilities: bool

    @property
    def logits(self) -> tuple[int, ...]:
        return (*self.batch, self.num_classes, *self.out_features)

    @property
    def rows(self) -> int:
        n = 1
        for d in self.batch:
            n *= d
        return n

    @property
    def positions(self) -> int:
        s = 1
        for d in self.out_features:
            s *= d
        return s


def optional_tensor(value: object, arg: str) -> None:
    if value is not None and not isinstance(value, torch.Tensor):
        raise TypeError(f"linear_cross_entropy(): argument '{arg}' must be Tensor, not {type(value).__name__}")


def linear_shapes(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    linear_bias: torch.Tensor | None,
    ignore_index: object,
) -> LinearShapes:
    """torch's own checks of ``F.linear_cross_entropy``; inputs of more than 2 dims are crossent's extension."""
    if input.dim() < 1:
        raise RuntimeError(f"expected input with dimensionality 1 or more, got {input.dim()}")
    if linear_weight.dim() < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.dim()}")
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {input.shape[-1]} and {linear_weight.shape[-1]}, respectively"
        )
    num_classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise RuntimeError(f"expected linear_bias shape {(num_classes, *out_features)}, got {tuple(linear_bias.shape)}")
    if out_features and input.dim() == 1:
        raise RuntimeError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
            f" batched input, (N, {in_features}), got unbatched input with shape {tuple(input.shape)}"
        )
    if out_features and input.dim() > 2:
        raise RuntimeError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
            f" input of shape (N, {in_features}), got input with shape {tuple(input.shape)}"
        )
    shapes = LinearShapes(tuple(input.shape[:-1]), in_features, num_classes, out_features, False)
    probabilities = tuple(target.shape) == shapes.logits
    if probabilities and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    if input.dim() > 2 and not probabilities and tuple(target.shape) != shapes.batch:
        raise ValueError(
            f"Expected target of shape {shapes.batch} (class indices) or {shapes.logits} (probabilities) "
            f"for input of shape {tuple(input.shape)}, got {tuple(target.shape)}"
        )
    return LinearShapes(shapes.batch, in_features, num_classes, out_features, probabilities)


def linear_dtypes(input: torch.Tensor, linear_weight: torch.Tensor, linear_bias: torch.Tensor | None) -> None:
    """The dtype errors of ``F.linear(input, linear_weight, linear_bias)``."""
    name = _checks.dtype_name
    if linear_bias is not None:
        if linear_bias.dtype != linear_weight.dtype:
            raise RuntimeError(
                "self and mat2 must have the same dtype, but got "
                f"{name(linear_bias.dtype)} and {name(linear_weight.dtype)}"
            )
        if input.dtype != linear_weight.dtype:
            raise RuntimeError(
                f"mat1 and mat2 must have the same dtype, but got {name(input.dtype)} and {name(linear_weight.dtype)}"
            )
    elif input.dtype != linear_weight.dtype:
        cpp = _CPP_TYPE_NAMES.get
        raise RuntimeError(
            "expected m1 and m2 to have the same dtype, but got: "
            f"{cpp(input.dtype, str(input.dtype))} != {cpp(linear_weight.dtype, str(linear_weight.dtype))}"
        )
