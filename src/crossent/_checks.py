"""Input validation for the whole family, with torch 2.13's exception classes and messages.

Every check here looks at shapes, dtypes and Python values only, except ``check_class_targets`` and the
BCE range checks, which read tensor values: they run eagerly on CPU, as device-side asserts on CUDA
(no host sync) and not at all while ``torch.compile`` traces (the kernels' own indexing checks remain).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_TORCH_DTYPE_NAMES = {
    torch.float64: "Double",
    torch.float32: "Float",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def dtype_name(dtype: torch.dtype) -> str:
    """ATen's scalar-type name, as torch prints it in error messages ('Float', 'Long', ...)."""
    return _TORCH_DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_tensor(value: object, fn: str, arg: str, position: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn}(): argument '{arg}' (position {position}) must be Tensor, not {type(value).__name__}")
    return value


def check_int(value: object, fn: str, arg: str, position: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}(): argument '{arg}' (position {position}) must be int, not {type(value).__name__}")
    if not -(2**63) <= value < 2**63:
        raise ValueError("Overflow when unpacking long long")
    return value


def check_floating(x: torch.Tensor, kernel: str) -> None:
    """Integer, bool and complex inputs have no kernel, as in torch."""
    if not x.is_floating_point():
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{dtype_name(x.dtype)}'")


def smoothing(label_smoothing: object) -> float:
    """torch treats label_smoothing < 0 and NaN as 0 and rejects values above 1."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(
            "cross_entropy_loss(): argument 'label_smoothing' (position 6) must be float, "
            f"not {type(label_smoothing).__name__}"
        )
    eps = float(label_smoothing)
    if eps > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {eps}")
    return eps if eps > 0.0 else 0.0  # NaN > 0 is False


def class_index_shapes(x: torch.Tensor, target: torch.Tensor) -> None:
    """Shape rules of ``nll_loss_nd`` for class-index targets (messages differ by input rank)."""
    if x.dim() < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {x.dim()})")
    if x.dim() != 1:
        target_batch = target.shape[0] if target.dim() > 0 else 0
        if x.shape[0] != target_batch:
            raise ValueError(f"Expected input batch_size ({x.shape[0]}) to match target batch_size ({target_batch}).")
    if x.dim() == 1 and target.dim() == 1 and target.shape[0] != 1:
        raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.shape[0]}")
    if x.dim() <= 2:
        if target.dim() > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    elif x.dim() == 4:
        if target.dim() != 3:
            raise RuntimeError(
                f"only batches of spatial targets supported (3D tensors) but got targets of dimension: {target.dim()}"
            )
        if tuple(target.shape) != (x.shape[0], *x.shape[2:]):
            raise RuntimeError(f"size mismatch (got input: {_shape(x)} , target: {_shape(target)}")
    elif tuple(target.shape[1:]) != tuple(x.shape[2:]):
        expected = "[" + ", ".join(str(s) for s in (x.shape[0], *x.shape[2:])) + "]"
        raise RuntimeError(f"Expected target size {expected}, got {_shape(target)}")


def class_weight(weight: torch.Tensor | None, x: torch.Tensor, num_classes: int) -> None:
    if weight is None:
        return
    if x.dim() <= 2:
        if weight.dim() != 1 or weight.numel() != num_classes:
            raise RuntimeError(
                f"weight tensor should be defined either for all {num_classes} classes or no classes "
                f"but got weight tensor of shape: {_shape(weight)}"
            )
    elif weight.numel() != num_classes:
        raise RuntimeError("weight tensor should be defined either for all or no classes")


def class_index_dtypes(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, kernel: str) -> None:
    check_floating(x, kernel)
    if x.dim() <= 2:
        if target.dtype not in (torch.int64, torch.uint8):
            raise RuntimeError(f"expected target dtype to be Long or Byte, but got {dtype_name(target.dtype)}")
    elif target.dtype != torch.int64:
        raise RuntimeError(f"expected scalar type Long but found {dtype_name(target.dtype)}")
    if weight is not None:
        if weight.dtype != x.dtype:
            raise RuntimeError(f"expected scalar type {dtype_name(x.dtype)} but found {dtype_name(weight.dtype)}")
        if weight.requires_grad:
            raise RuntimeError(
                "The function 'nll_loss_forward' is not differentiable with respect to argument 'weight'. "
                "This input cannot have requires_grad True."
            )


def _check_values(invalid: torch.Tensor, exc: type[Exception], message: Callable[[], str], device_message: str) -> None:
    """Raise ``exc(message())`` where ``invalid`` has a True entry; a device-side assert on accelerators."""
    if invalid.numel() == 0 or torch.compiler.is_compiling():
        return
    if invalid.device.type == "cpu":
        if bool(invalid.any()):
            raise exc(message())
    else:
        torch._assert_async(~invalid.any(), device_message)


def class_targets(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Every kept target must lie in ``[0, C)``: ``IndexError: Target 5 is out of bounds.``"""
    t = target.long()
    invalid = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    _check_values(
        invalid, IndexError, lambda: f"Target {int(t[invalid][0])} is out of bounds.", "Target is out of bounds."
    )


def unit_interval(x: torch.Tensor, name: str) -> None:
    """BCE's per-element range check (NaN fails it too)."""
    message = f"all elements of {name} should be between 0 and 1"
    _check_values(~((x >= 0) & (x <= 1)), RuntimeError, lambda: message, message)


def broadcast_shape(a: torch.Size, b: torch.Size) -> torch.Size:
    """``a`` broadcast with ``b``, with ATen's message naming the first mismatch from the right."""
    ndim = max(len(a), len(b))
    out = []
    for i in range(ndim - 1, -1, -1):
        size_a = a[i - ndim + len(a)] if i - ndim + len(a) >= 0 else 1
        size_b = b[i - ndim + len(b)] if i - ndim + len(b) >= 0 else 1
        if size_a != size_b and size_a != 1 and size_b != 1:
            raise RuntimeError(
                f"The size of tensor a ({size_a}) must match the size of tensor b ({size_b}) "
                f"at non-singleton dimension {i}"
            )
        out.append(size_b if size_a == 1 else size_a)
    return torch.Size(reversed(out))


def in_place_broadcast(result: torch.Size, other: torch.Size, other_is_a: bool = False) -> None:
    """``result *= other`` in place: ``other`` must broadcast to ``result`` without enlarging it."""
    shape = broadcast_shape(other, result) if other_is_a else broadcast_shape(result, other)
    if shape != result:
        raise RuntimeError(f"output with shape {list(result)} doesn't match the broadcast shape {list(shape)}")


def softmax_kernel_name(x: torch.Tensor, dim: int) -> str:
    last = x.dim() == 0 or dim in (-1, x.dim() - 1)
    return "log_softmax_lastdim_kernel_impl" if last else "log_softmax_kernel_impl"


def cross_entropy_arguments(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: object,
    label_smoothing: object,
) -> tuple[int, float]:
    """``cross_entropy``'s checks, in torch's order, for class-index or probability targets.

    ``logits`` may be any tensor of the logits' shape and dtype (the fused linear loss passes a meta
    tensor). Returns the validated ``ignore_index`` and the clipped label smoothing.
    """
    ignore_index = check_int(ignore_index, "cross_entropy_loss", "ignore_index", 5)
    cd = 0 if logits.dim() == 1 else 1
    if logits.shape == target.shape:
        if not target.is_floating_point():
            raise RuntimeError(
                f"Expected floating point type for target with class probabilities, got {dtype_name(target.dtype)}"
            )
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        if logits.dim() == 0:
            raise IndexError("Dimension specified as 1 but tensor has no dimensions")
        num_classes = logits.shape[cd]
        if weight is not None and (weight.dim() != 1 or weight.numel() != num_classes):
            raise RuntimeError(
                f"cross_entropy: weight tensor should be defined either for all {num_classes} classes or no "
                f"classes but got weight tensor of shape: [{', '.join(str(s) for s in weight.shape)}]"
            )
        eps = smoothing(label_smoothing)
        check_floating(logits, softmax_kernel_name(logits, cd))
    else:
        eps = smoothing(label_smoothing)
        if logits.dim() > 0:
            check_floating(logits, softmax_kernel_name(logits, cd))
        class_index_shapes(logits, target)
        if eps > 0 and logits.dim() == 1 and target.dim() == 1:
            raise RuntimeError("output with shape [] doesn't match the broadcast shape [1]")
        num_classes = logits.shape[cd]
        class_weight(weight, logits, num_classes)
        class_index_dtypes(logits, target, weight, "nll_loss_out_frame")
        class_targets(target, num_classes, ignore_index)
    return ignore_index, eps
