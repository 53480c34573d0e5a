"""Where every public loss starts: the checks and casts that apply to a call as a whole.

``public_op(op)`` wraps a public function so that:

* under a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ``jvp``, ...) or forward-mode AD it
  raises one clear error naming the transform: crossent's backward passes are hand-written and
  first-order, and its kernels have no batching rule;
* under ``torch.autocast`` its arguments are cast as torch's policy for the op says
  (``crossent._autocast``), and the body runs with autocast off.

Outside both, the call goes straight through (two cheap flag reads).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.autograd.forward_ad as forward_ad

from crossent import _autocast

Fn = TypeVar("Fn", bound=Callable[..., Any])

_TRANSFORMS = {
    "Vmap": "torch.func.vmap",
    "Grad": "torch.func.grad (or vjp, jacrev)",
    "Jvp": "torch.func.jvp (or jacfwd)",
    "Functionalize": "torch.func.functionalize",
}


def _refuse_transforms(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise when ``op`` is called under a torch.func transform or with forward-mode dual tensors."""
    transform = None
    if torch._C._are_functorch_transforms_active():
        interpreter = torch._C._functorch.peek_interpreter_stack()
        kind = interpreter.key().name if interpreter is not None else ""
        transform = _TRANSFORMS.get(kind, "a torch.func transform")
    elif forward_ad._current_level >= 0:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if any(forward_ad.unpack_dual(t).tangent is not None for t in tensors):
            transform = "forward-mode AD (dual tensors)"
    if transform is not None:
        raise RuntimeError(
            f"crossent.{op} does not support {transform}: its backward is hand-written and first-order. "
            f"Call it outside the transform, or use torch.nn.functional.{op} inside it"
        )


def public_op(op: str) -> Callable[[Fn], Fn]:
    """Decorate the public function ``op`` (its first argument is the input tensor)."""

    def decorate(fn: Fn) -> Fn:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _refuse_transforms(op, args, kwargs)
            first = args[0] if args else kwargs.get("input")
            device_type = first.device.type if isinstance(first, torch.Tensor) else None
            if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
                return fn(*args, **kwargs)
            call_args = list(args)
            _autocast.apply(op, device_type, call_args, kwargs)
            with torch.autocast(device_type, enabled=False):
                return fn(*call_args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
