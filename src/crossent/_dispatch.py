"""The one place where an implementation is chosen for an op.

``impl="auto"`` picks Triton for CUDA tensors when Triton imports and its kernel supports the call,
the native kernels (``crossent.native``) for CPU tensors when they load and support the call, and
crossent's PyTorch path otherwise. An explicitly requested implementation that cannot run
raises ``RuntimeError`` naming the ones that can. A backend's capability check sees the call as a
frozen ``CallSpec``.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from typing import Literal, get_args

import torch

Impl = Literal["auto", "torch", "native", "triton"]
Backend = Literal["torch", "native", "triton"]
Op = Literal[
    "cross_entropy",
    "nll_loss",
    "log_softmax",
    "softmax",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "linear_cross_entropy",
]
OPS: tuple[Op, ...] = get_args(Op)
IMPLS: tuple[str, ...] = tuple(i for i in get_args(Impl) if i != "auto")


@dataclass(frozen=True)
class CallSpec:
    """What a capability check may ask about a call (defaults: a plain float32 call)."""

    dtype: torch.dtype = torch.float32
    ndim: int = 2
    probability: bool = False  # cross_entropy with class-probability targets
    weight: bool = False
    weight_requires_grad: bool = False
    pos_weight: bool = False
    label_smoothing: float = 0.0
    reduction: str = "mean"
    inplace_backward: bool = False
    log_target: bool = False
    inner: int = 1  # elements after the class (or softmax) dim: 1 when it is the last
    classes: int = 1  # the size of the class (or softmax) dim
    same_dtype: bool = True  # every floating operand has the input's dtype
    target_requires_grad: bool = False
    repeating: bool = True  # weights broadcast only over leading dims (they repeat every numel elements)
    options: tuple[str, ...] = ()  # the language-model options in use (``LogitOptions.names``)
    loss_dtype: torch.dtype | None = None  # the loss's dtype, when asked for one other than the input's


@torch.compiler.assume_constant_result
def triton_status() -> str | None:
    """None when ``crossent.triton`` imports, else the reason it does not (a constant to the compiler)."""
    return _triton_import_status()


@functools.lru_cache(maxsize=1)
def _triton_import_status() -> str | None:
    try:
        importlib.import_module("crossent.triton")
    except Exception as exc:  # ImportError, or a broken Triton install raising anything else
        return f"triton is not importable ({type(exc).__name__}: {exc})"
    return None


def _triton_reason(op: Op, device: torch.device, spec: CallSpec) -> str | None:
    """Why the Triton kernel cannot run this call, or None when it can."""
    status = triton_status()
    if status is not None:
        return status
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and not (interpret and device.type == "cpu"):
        return f"triton needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {device.type}"
    from crossent.triton._support import unsupported_reason  # importable: ``triton_status`` said so

    return unsupported_reason(op, spec)


def _native_reason(op: Op, device: torch.device, spec: CallSpec, *, warn: bool) -> str | None:
    """Why the native kernel cannot run this call, or None when it can (``warn``: once, when they do not load)."""
    if device.type != "cpu":
        return f"the native kernels run on CPU tensors, got {device.type}"
    from crossent import native

    reason = native.unavailable_reason() if warn else native.quiet_unavailable_reason()
    if reason:
        return reason
    from crossent.native._support import unsupported_reason

    return unsupported_reason(op, spec)


def resolve(op: Op, impl: Impl, device: torch.device, spec: CallSpec = CallSpec()) -> Backend:
    """The implementation that runs ``op`` on ``device`` for the call ``spec``."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; crossent dispatches {', '.join(OPS)}")
    if impl not in get_args(Impl):
        raise ValueError(f"impl must be one of 'auto', {', '.join(repr(i) for i in IMPLS)}; got {impl!r}")
    if impl == "torch":
        return "torch"
    if impl == "native" or (impl == "auto" and device.type == "cpu"):
        reason = _native_reason(op, device, spec, warn=impl == "auto")
        if impl == "native" and reason is not None:
            raise RuntimeError(f"impl='native' cannot run {op}: {reason}. Available here: 'torch'")
        return "native" if reason is None else "torch"
    reason = _triton_reason(op, device, spec) if impl == "triton" or device.type == "cuda" else "not CUDA"
    if impl == "triton" and reason is not None:
        raise RuntimeError(f"impl='triton' cannot run {op}: {reason}. Available here: 'torch'")
    return "triton" if reason is None else "torch"


def explain(device: torch.device) -> dict[str, str]:
    """For each op, what ``impl="auto"`` resolves to on ``device`` for a plain call, and why."""
    table: dict[str, str] = {}
    for op in OPS:
        choice = resolve(op, "auto", device)
        if choice == "torch":
            why = _triton_reason(op, device, CallSpec()) if device.type == "cuda" else None
            why = why or (_native_reason(op, device, CallSpec(), warn=False) if device.type == "cpu" else None)
            table[op] = f"torch ({why})" if why else "torch"
        elif choice == "native":
            from crossent import native

            table[op] = f"native ({getattr(native.load(), 'level', '?')})"
        else:
            table[op] = choice
    return table


def spec_of(x: torch.Tensor, **options: object) -> CallSpec:
    """The ``CallSpec`` of a call on ``x`` with ``options`` (``CallSpec``'s field names; a typo raises)."""
    return CallSpec(**{"dtype": x.dtype, "ndim": x.dim(), **options})  # type: ignore[arg-type]
