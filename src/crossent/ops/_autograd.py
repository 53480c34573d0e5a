"""What every autograd Function here shares: first-order backward passes, and the gradient hand-over."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
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


def hand_over(
    ctx: Any, precomputed: Sequence[torch.Tensor | None], factor: torch.Tensor
) -> list[torch.Tensor | None] | None:
    """Gradients formed in the forward for an upstream gradient of 1, times ``factor``; at most once.

    Gradients are linear in the upstream gradient, so a forward that formed them (from the same
    exponentials as the loss) leaves the backward only a rescale. The forward saves them with
    ``save_for_backward`` like any other tensor, so ``saved_tensors_hooks`` (``save_on_cpu``) see
    them. The first backward scales them in place and hands them to autograd, which may keep them as
    ``.grad``; that write goes through an alias with its own version counter, so the saved tensors
    still unpack. Later backwards through a retained graph get None and recompute from the saved
    inputs. Traced by ``torch.compile``, it returns scaled copies and the compiler plans the buffers.
    """
    if all(p is None for p in precomputed) or getattr(ctx, "handed_over", False):
        return None
    ctx.handed_over = True
    if torch.compiler.is_compiling():
        return [None if p is None else p * factor for p in precomputed]
    if factor.device.type == "cpu" and factor.numel() == 1 and factor.item() == 1:
        return [None if p is None else _alias(p) for p in precomputed]  # the usual loss.backward(): no pass at all
    return [None if p is None else _alias(p).mul_(factor) for p in precomputed]


def reuse(ctx: Any, precomputed: torch.Tensor | None) -> torch.Tensor | None:
    """The forward's gradient buffer, for a backward that forms the gradient anew (an upstream gradient
    the forward could not know, such as the entropy's): at most once, in eager mode; None otherwise."""
    if precomputed is None or getattr(ctx, "handed_over", False) or torch.compiler.is_compiling():
        return None
    ctx.handed_over = True
    return _alias(precomputed)


def _alias(t: torch.Tensor) -> torch.Tensor:
    """``t``'s storage and layout under a tensor with its own version counter."""
    alias = torch.empty(0, dtype=t.dtype, device=t.device)
    return alias.set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


def save_scalars(ctx: Any, *values: torch.Tensor | float | None) -> list[torch.Tensor | None]:
    """Numbers a backward needs: tensors are returned for ``save_for_backward``, the rest kept on ``ctx``."""
    ctx.scalars = [None if isinstance(v, torch.Tensor) else v for v in values]
    return [v if isinstance(v, torch.Tensor) else None for v in values]


def saved_scalars(ctx: Any, tensors: Sequence[torch.Tensor | None]) -> list[Any]:
    """The numbers ``save_scalars`` kept, from the saved ``tensors`` in the same order."""
    return [t if t is not None else v for t, v in zip(tensors, ctx.scalars, strict=True)]
