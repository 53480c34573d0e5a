"""Backward passes here are first-order: hand-written, fast, and not themselves differentiable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.autograd.function import once_differentiable

Backward = TypeVar("Backward", bound=Callable[..., Any])


def first_order(backward: Backward) -> Backward:
    """Run ``backward`` without building a graph, and refuse ``create_graph=True`` with a clear error.

    ``once_differentiable`` alone only errors when an upstream gradient requires grad; with a plain
    ``torch.autograd.grad(loss, x, create_graph=True)`` it would hand back a gradient with no graph,
    so a second derivative would fail far from the cause.
    """
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx: Any, *grad_outputs: Any) -> Any:
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"crossent's {type(ctx).__name__.removesuffix('Backward')} has a first-order hand-written backward: "
                "double backward (create_graph=True) is not supported"
            )
        return inner(ctx, *grad_outputs)

    return wrapper  # type: ignore[return-value]
