"""The one place where an implementation is chosen for an op.

``impl="auto"`` picks Triton for CUDA tensors when Triton imports and the kernel supports the
requested options, and crossent's PyTorch path otherwise. An explicitly requested implementation
that cannot run raises ``RuntimeError`` naming the ones that can.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Literal

import torch

Impl = Literal["auto", "torch", "triton"]
IMPLS: tuple[str, ...] = ("torch", "triton")

OPS: tuple[str, ...] = (
    "cross_entropy",
    "nll_loss",
    "log_softmax",
    "softmax",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "linear_cross_entropy",
)


@functools.lru_cache(maxsize=1)
def triton_status() -> str | None:
    """None when ``crossent.triton`` imports, else the reason it does not."""
    try:
        importlib.import_module("crossent.triton")
    except Exception as exc:  # ImportError, or a broken Triton install raising anything else
        return f"triton is not importable ({type(exc).__name__}: {exc})"
    return None


def _triton_reason(op: str, device: torch.device, options: dict[str, object]) -> str | None:
    """Why the Triton kernel cannot run this call, or None when it can."""
    status = triton_status()
    if status is not None:
        return status
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type != "cuda" and not (interpret and device.type == "cpu"):
        return f"triton needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {device.type}"
    reason: str | None = importlib.import_module("crossent.triton").unsupported_reason(op, options)
    return reason


def resolve(op: str, impl: str, device: torch.device, options: dict[str, object] | None = None) -> str:
    """The implementation that runs ``op`` on ``device`` with ``options``: "torch" or "triton"."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; crossent dispatches {', '.join(OPS)}")
    if impl not in ("auto", *IMPLS):
        raise ValueError(f"impl must be one of 'auto', {', '.join(repr(i) for i in IMPLS)}; got {impl!r}")
    opts = options or {}
    if impl == "torch":
        return "torch"
    if impl == "triton":
        reason = _triton_reason(op, device, opts)
        if reason is not None:
            raise RuntimeError(f"impl='triton' cannot run {op}: {reason}. Available here: 'torch'")
        return "triton"
    if device.type == "cuda" and _triton_reason(op, device, opts) is None:
        return "triton"
    return "torch"


def explain(device: torch.device) -> dict[str, str]:
    """For each op, what ``impl="auto"`` resolves to on ``device`` with default options, and why."""
    table: dict[str, str] = {}
    for op in OPS:
        choice = resolve(op, "auto", device)
        if choice == "torch" and device.type == "cuda":
            table[op] = f"torch ({_triton_reason(op, device, {})})"
        else:
            table[op] = choice
    return table
