"""Every argument check of the family, with torch 2.13's exception classes and messages: the one place
where crossent follows torch's quirks (the order of checks, ATen's wording, C++ type names).

Every check here looks at shapes, dtypes and Python values only, except ``check_class_targets`` and the
BCE range checks, which read tensor values: they run eagerly on CPU, as device-side asserts on CUDA
(no host sync) and not at all while ``torch.compile`` traces (the kernels' own indexing checks remain).
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from crossent._engine import LogitOptions

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
        raise TypeError(f"{fn}(): argument '{arg}' (position {position}) must be Tensor, not {_type_name(value)}")
    return value


def check_int(value: object, fn: str, arg: str, position: int, *, symint: bool = False) -> int:
    """An integer argument, by torch's Python-argument rules.

    Python and NumPy integers and 0-d integer tensors are accepted, bools never. A ``SymInt`` argument
    (``ignore_index``) also takes any object with ``__index__`` and one-element integer tensors.
    """
    if isinstance(value, torch.Tensor):
        integral = not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
        if integral and (value.dim() == 0 or (symint and value.numel() == 1)):
            value = int(value.item())
    elif symint and not isinstance(value, (bool, np.bool_)) and hasattr(type(value), "__index__"):
        value = operator.index(value)  # type: ignore[arg-type]
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}(): argument '{arg}' (position {position}) must be int, not {_type_name(value)}")
    if not -(2**63) <= value < 2**63:
        raise ValueError("Overflow when unpacking long long")
    return value


def check_float(value: object, fn: str, arg: str, position: int) -> float:
    """A floating argument, by torch's Python-argument rules: Python and NumPy reals and bools, and 0-d
    tensors that do not require grad."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad and not value.is_complex():
        return float(value.item())
    if isinstance(value, (numbers.Real, np.bool_)):
        return float(value)
    raise TypeError(f"{fn}(): argument '{arg}' (position {position}) must be float, not {_type_name(value)}")


_PYTHON_DTYPES = {float: torch.float64, int: torch.int64, bool: torch.bool, complex: torch.complex128}


def check_dtype(value: object, fn: str) -> torch.dtype:
    """A ``dtype=`` argument: a torch.dtype, or the Python type ``float``, ``int``, ``bool`` or ``complex``."""
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, type) and value in _PYTHON_DTYPES:
        return _PYTHON_DTYPES[value]
    raise TypeError(f"{fn}(): argument 'dtype' must be torch.dtype, not {_type_name(value)}")


def check_optional_tensor(value: object, fn: str, arg: str, position: int) -> torch.Tensor | None:
    return None if value is None else check_tensor(value, fn, arg, position)


def _type_name(value: object) -> str:
    """The type as torch's argument errors print it (CPython's ``tp_name``): NumPy's types with their
    module, Python classes and builtins bare."""
    kind = type(value)
    return f"numpy.{kind.__name__}" if kind.__module__ == "numpy" else kind.__name__


def check_floating(x: torch.Tensor, kernel: str) -> None:
    """Integer, bool and complex inputs have no kernel, as in torch."""
    if not x.is_floating_point():
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{dtype_name(x.dtype)}'")


def smoothing(label_smoothing: object) -> float:
    """torch treats label_smoothing < 0 and NaN as 0 and rejects values above 1."""
    eps = check_float(label_smoothing, "cross_entropy_loss", "label_smoothing", 6)
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
    else:
        if tuple(target.shape[1:]) != tuple(x.shape[2:]):
            expected = "[" + ", ".join(str(s) for s in (x.shape[0], *x.shape[2:])) + "]"
            raise RuntimeError(f"Expected target size {expected}, got {_shape(target)}")
        if x.numel() == 0 and target.numel() > 0:
            # torch views these inputs as (N, C, 1, -1), and an empty one as (N, C, 0, 0): without
            # classes the targets no longer fit
            n, c = x.shape[:2]
            raise RuntimeError(f"size mismatch (got input: [{n}, {c}, 0, 0] , target: [{n}, 1, {target.numel() // n}]")


def class_weight(
    weight: torch.Tensor | None, x: torch.Tensor, num_classes: int, smoothing: bool = False, reduction: str = ""
) -> torch.Tensor | None:
    """The class weight as a ``(C,)`` view, by torch's shape rules.

    Inputs of at most 2 dims need a ``(C,)`` weight. K-dimensional inputs take any shape with C
    elements (``(C, 1)``, ``(1, C)``, ...), which torch flattens; with label smoothing torch also views
    it as ``(1, weight.size(0), 1, ...)``, so its first dim must be C, and its ``'mean'`` (which gathers
    the weight by the flat targets) takes only a 1-d weight.
    """
    if weight is None:
        return None
    if x.dim() <= 2:
        if weight.dim() != 1 or weight.numel() != num_classes:
            raise RuntimeError(
                f"weight tensor should be defined either for all {num_classes} classes or no classes "
                f"but got weight tensor of shape: {_shape(weight)}"
            )
        return weight
    if weight.numel() != num_classes:
        raise RuntimeError("weight tensor should be defined either for all or no classes")
    if smoothing and weight.shape[0] != num_classes:
        view = "[" + ", ".join(str(weight.shape[0]) if d == 1 else "1" for d in range(x.dim())) + "]"
        raise RuntimeError(f"shape '{view}' is invalid for input of size {weight.numel()}")
    if smoothing and reduction == "mean" and weight.dim() != 1:
        raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    return weight.reshape(num_classes)


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
    if target.numel() == 0 or torch.compiler.is_compiling():
        return
    t = target.long()
    if t.device.type == "cpu":
        # one pass and one read for the common case; the exact offender only when there is one
        low, high = torch.stack(torch.aminmax(t.masked_fill(t == ignore_index, 0))).tolist()
        if low >= 0 and high < num_classes:
            return
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


def in_place_gradient(x: torch.Tensor, requested: bool, gradient_expected: bool) -> bool:
    """Whether ``inplace_backward=True`` may write the gradient into the storage of the logits ``x``.

    The storage must not belong to a leaf that requires grad: ``x`` itself, or the tensor it is a view
    of (``W.view(...)``, ``W[:]``, ``W.unsqueeze(0)[0]``, ``W.as_strided(...)``); writing there would
    overwrite a parameter, so such calls raise. Elsewhere the write is safe for autograd: every view of
    the storage shares one version counter, so a later backward that saved any of them fails loudly
    instead of reading the gradient. The logits are left alone (a fresh buffer is used) when no
    gradient is coming and while ``torch.compile`` traces, where the compiler plans buffers itself.
    """
    if not requested:
        return False
    owner = x._base if x._base is not None else x
    if x.requires_grad and owner.is_leaf and owner.requires_grad:
        what = "a leaf tensor" if owner is x else f"a view of a leaf tensor of shape {_shape(owner)}"
        raise RuntimeError(
            f"cross_entropy(inplace_backward=True) would overwrite {what} that requires grad (a parameter); "
            "pass logits computed by an operation (e.g. hidden @ W.T), or inplace_backward=False"
        )
    return gradient_expected and not torch.compiler.is_compiling()


def softmax_dim(name: str, x: torch.Tensor, dim: int | None, stacklevel: int) -> int:
    """The normalised dim of ``softmax``/``log_softmax``; ``None`` warns and picks torch's implicit choice."""
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {name} has been deprecated. "
            "Change the call to include dim=X as an argument.",
            UserWarning,
            stacklevel=stacklevel,
        )
        dim = 0 if x.dim() in (0, 1, 3) else 1
    dim = check_int(dim, name, "dim", 1)
    low, high = (-1, 0) if x.dim() == 0 else (-x.dim(), x.dim() - 1)
    if not low <= dim <= high:
        raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
    return dim % max(x.dim(), 1)


def softmax_kernel_name(x: torch.Tensor, dim: int) -> str:
    last = x.dim() == 0 or dim in (-1, x.dim() - 1)
    return "log_softmax_lastdim_kernel_impl" if last else "log_softmax_kernel_impl"


def cross_entropy_arguments(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: object,
    ignore_index: object,
    label_smoothing: object,
    reduction: str = "mean",
    *,
    shard: bool = False,
    targets: bool = True,
) -> tuple[int, float, torch.Tensor | None]:
    """``cross_entropy``'s checks, in torch's order, for class-index or probability targets.

    ``targets=False`` leaves the last check, the range of class-index targets, to the caller (the
    native kernels make it as they read the targets).

    ``logits`` may be any tensor of the logits' shape and dtype (the fused linear loss passes a meta
    tensor). With ``shard`` they are one rank's slice of the classes: the weight is its slice too,
    ``(C_local,)``, the target shape rules are about the global logits (a shard may have no class of
    its own), and the target range is checked across the ranks instead. Returns the validated
    ``ignore_index``, the clipped label smoothing and the weight as a ``(C,)`` view.
    """
    checked_weight = check_optional_tensor(weight, "cross_entropy_loss", "weight", 3)
    ignore_index = check_int(ignore_index, "cross_entropy_loss", "ignore_index", 5, symint=True)
    label_smoothing = check_float(label_smoothing, "cross_entropy_loss", "label_smoothing", 6)
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
        if checked_weight is not None and (checked_weight.dim() != 1 or checked_weight.numel() != num_classes):
            raise RuntimeError(_weight_message(checked_weight, num_classes, shard, "cross_entropy: "))
        eps = smoothing(label_smoothing)
        check_floating(logits, softmax_kernel_name(logits, cd))
        return ignore_index, eps, checked_weight
    eps = smoothing(label_smoothing)
    if logits.dim() == 0:  # log_softmax over the class dim 1 of a 0-dim input
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
    check_floating(logits, softmax_kernel_name(logits, cd))
    no_class_of_its_own = shard and logits.dim() > 1 and logits.shape[1] == 0
    if no_class_of_its_own:  # torch refuses any target for K-dim logits without classes: not our case
        logits = torch.empty((logits.shape[0], 1, *logits.shape[2:]), dtype=logits.dtype, device="meta")
    class_index_shapes(logits, target)
    if eps > 0 and logits.dim() == 1 and target.dim() == 1:
        raise RuntimeError("output with shape [] doesn't match the broadcast shape [1]")
    num_classes = 0 if no_class_of_its_own else logits.shape[cd]
    if shard and checked_weight is not None and (checked_weight.dim() != 1 or checked_weight.numel() != num_classes):
        raise RuntimeError(_weight_message(checked_weight, num_classes, shard, ""))
    if not shard:
        checked_weight = class_weight(checked_weight, logits, num_classes, eps > 0, reduction)
    class_index_dtypes(logits, target, checked_weight, "nll_loss_out_frame")
    if targets and not shard:
        class_targets(target, num_classes, ignore_index)
    return ignore_index, eps, checked_weight


def _weight_message(weight: torch.Tensor, num_classes: int, shard: bool, prefix: str) -> str:
    if shard:
        return (
            f"weight must be this rank's slice of the class weights, of shape [{num_classes}] like the class "
            f"dimension of input, but got weight tensor of shape: {_shape(weight)}"
        )
    return (
        f"{prefix}weight tensor should be defined either for all {num_classes} classes or no classes "
        f"but got weight tensor of shape: {_shape(weight)}"
    )


def _option(value: object, caller: str, name: str, low: float, inclusive: bool) -> float:
    """A number option above ``low`` (or at it, when ``inclusive``), finite: TypeError or ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{caller}: {name} must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number) or number < low or (number == low and not inclusive):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ValueError(f"{caller}: {name} must be a finite number {bound}, got {value!r}")
    return number


def logit_options(
    caller: str, softcap: object, temperature: object, z_loss: object, return_stats: object
) -> LogitOptions:
    """The language-model options of a cross-entropy call: ``softcap > 0`` (or None), ``temperature > 0``,
    ``z_loss >= 0``, a bool ``return_stats``."""
    cap = None if softcap is None else _option(softcap, caller, "softcap", 0.0, inclusive=False)
    temp = _option(temperature, caller, "temperature", 0.0, inclusive=False)
    z = _option(z_loss, caller, "z_loss", 0.0, inclusive=True)
    if not isinstance(return_stats, bool):
        raise TypeError(f"{caller}: return_stats must be a bool, not {_type_name(return_stats)}")
    return LogitOptions(cap, temp, z, return_stats)


def causal_shift(shift: object, input: torch.Tensor, probabilities: bool, caller: str) -> None:
    """``shift``: an int in ``[0, T)`` for hidden states ``(B, T, H)`` and class-index labels."""
    if isinstance(shift, bool) or not isinstance(shift, numbers.Integral):
        raise TypeError(f"{caller}: shift must be an int, not {_type_name(shift)}")
    shift = int(shift)
    if shift == 0:
        return
    if input.dim() < 3:
        raise ValueError(
            f"{caller}: shift needs hidden states (B, T, H) and labels (B, T), got input of shape {_shape(input)}"
        )
    if probabilities:
        raise ValueError(f"{caller}: shift takes class-index labels, not class probabilities")
    length = input.shape[-2]
    if not 0 <= shift < length:
        raise ValueError(f"{caller}: shift must be in [0, T) for T = {length} (input {_shape(input)}), got {shift}")


def focal_arguments(caller: str, input: object, target: object, value: object, name: str, low: float = 0.0) -> None:
    """A focal or poly-1 loss: tensors, and its coefficient ``name`` at least ``low``."""
    check_tensor(input, caller, "input", 1)
    check_tensor(target, caller, "target", 2)
    _option(value, caller, name, low, inclusive=True)


def focal_alpha(alpha: object, classes: int, input: torch.Tensor) -> torch.Tensor:
    """``alpha`` of the focal loss as per-class factors ``(C,)`` in the input's dtype: a float in
    ``[0, inf)`` for every class, or a tensor of ``C`` non-negative factors."""
    if isinstance(alpha, torch.Tensor):
        if alpha.dim() != 1 or alpha.shape[0] != classes:
            raise ValueError(f"focal_loss: alpha must have one value per class ({classes}), got shape {_shape(alpha)}")
        if not alpha.is_floating_point():
            raise TypeError(f"focal_loss: alpha must be a floating tensor, not {dtype_name(alpha.dtype)}")
        if alpha.device != input.device:
            raise RuntimeError(f"focal_loss: alpha is on {alpha.device} and input on {input.device}")
        return alpha.to(input.dtype)
    factor = _option(alpha, "focal_loss", "alpha", 0.0, inclusive=True)
    return torch.full((classes,), factor, dtype=input.dtype, device=input.device)


def check_normalizer(normalizer: object, reduction: str, caller: str) -> None:
    """A ``normalizer=`` is one number (a Python number or a one-element tensor) and divides a summed loss."""
    if normalizer is None:
        return
    if isinstance(normalizer, bool) or not isinstance(normalizer, (int, float, torch.Tensor)):
        raise TypeError(f"{caller}: normalizer must be a number or a Tensor, not {type(normalizer).__name__}")
    if isinstance(normalizer, torch.Tensor) and normalizer.numel() != 1:
        raise ValueError(
            f"{caller}: normalizer must hold one value, but got a tensor of shape {list(normalizer.shape)}"
        )
    if reduction == "none":
        raise ValueError(f"{caller}: normalizer divides the summed loss; use reduction='sum' or 'mean', not 'none'")


def binary_cross_entropy_arguments(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, values: bool = True
) -> None:
    """``binary_cross_entropy``'s checks, in torch's order; the last ones (``values``) read every value,
    which the native kernels do as they compute the loss instead."""
    check_tensor(input, "binary_cross_entropy", "input", 1)
    check_tensor(target, "binary_cross_entropy", "target", 2)
    if target.shape != input.shape:
        raise ValueError(
            f"Using a target size ({target.size()}) that is different to the input size ({input.size()}) "
            "is deprecated. Please ensure they have the same size."
        )
    if weight is not None:
        try:
            # torch reads weight.size() unchecked: a list or an array fails right here, as in torch
            torch.broadcast_shapes(target.size(), weight.size())
        except RuntimeError as exc:
            raise RuntimeError(str(exc)) from None
        in_place_broadcast(input.shape, weight.shape)
    check_floating(input, "binary_cross_entropy")
    if target.dtype != input.dtype:
        raise RuntimeError(f"Found dtype {dtype_name(target.dtype)} but expected {dtype_name(input.dtype)}")
    if weight is not None and weight.requires_grad:
        raise RuntimeError(
            "The function 'binary_cross_entropy' is not differentiable with respect to argument 'weight'. "
            "This input cannot have requires_grad True."
        )
    if values:
        unit_interval(input, "input")
        unit_interval(target, "target")


def binary_cross_entropy_with_logits_arguments(
    input: torch.Tensor, target: torch.Tensor, weight: object, pos_weight: object
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``binary_cross_entropy_with_logits``'s checks, in torch's order; returns ``(weight, pos_weight)``."""
    fn = "binary_cross_entropy_with_logits"
    check_tensor(input, fn, "input", 1)
    check_tensor(target, fn, "target", 2)
    weight = check_optional_tensor(weight, fn, "weight", 3)
    pos_weight = check_optional_tensor(pos_weight, fn, "pos_weight", 4)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.size()}) must be the same as input size ({input.size()})")
    if not input.is_floating_point():
        raise NotImplementedError(f"\"log_sigmoid_cpu\" not implemented for '{dtype_name(input.dtype)}'")
    if target.dtype == torch.bool:
        raise RuntimeError(
            "Subtraction, the `-` operator, with two bool tensors is not supported. "
            "Use the `^` or `logical_xor()` operator instead."
        )
    if not target.is_floating_point():
        raise RuntimeError(f"result type Float can't be cast to the desired output type {dtype_name(target.dtype)}")
    if pos_weight is not None:
        in_place_broadcast(target.shape, pos_weight.shape, other_is_a=True)
    if weight is not None:
        in_place_broadcast(target.shape, weight.shape)
    for name, extra in (("weight", weight), ("pos_weight", pos_weight)):
        if extra is not None and extra.requires_grad:
            raise RuntimeError(
                f"The function '{fn}' is not differentiable with respect to argument '{name}'. "
                "This input cannot have requires_grad True."
            )
    return weight, pos_weight


def kl_div_arguments(input: torch.Tensor, target: torch.Tensor, log_target: object) -> None:
    """``kl_div``'s checks, in torch's order."""
    check_tensor(input, "kl_div", "input", 1)
    check_tensor(target, "kl_div", "target", 2)
    if not isinstance(log_target, bool):
        raise TypeError(f"kl_div(): argument 'log_target' must be bool, not {type(log_target).__name__}")
    for t in (input, target):
        if t.is_complex():
            raise RuntimeError("kl_div: Complex inputs not supported.")
        if not t.is_floating_point():
            raise RuntimeError("kl_div: Integral inputs not supported.")
    broadcast_shape(target.shape, input.shape)


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
        return math.prod(self.batch)

    @property
    def positions(self) -> int:
        return math.prod(self.out_features)


def linear_cross_entropy_arguments(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    linear_bias: torch.Tensor | None,
    weight: object,
    ignore_index: object,
) -> LinearShapes:
    """torch's own checks of ``F.linear_cross_entropy`` in its order, then those of ``F.linear``'s dtypes.

    Inputs of more than 2 dims are crossent's extension. The checks of the cross-entropy the call
    stands for follow (``cross_entropy_arguments``, on a meta tensor of the logits' shape).
    """
    check_tensor(input, "linear_cross_entropy", "input", 1)
    check_tensor(linear_weight, "linear_cross_entropy", "linear_weight", 2)
    check_tensor(target, "linear_cross_entropy", "target", 3)
    for arg, value in (("linear_bias", linear_bias), ("weight", weight)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"linear_cross_entropy(): argument '{arg}' must be Tensor, not {type(value).__name__}")
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
    _linear_dtypes(input, linear_weight, linear_bias)
    return LinearShapes(shapes.batch, in_features, num_classes, out_features, probabilities)


def _linear_dtypes(input: torch.Tensor, linear_weight: torch.Tensor, linear_bias: torch.Tensor | None) -> None:
    """The dtype errors of ``F.linear(input, linear_weight, linear_bias)``."""
    name = dtype_name
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
