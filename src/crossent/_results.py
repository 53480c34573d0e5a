"""What a cross-entropy call returns besides the loss when asked: ``return_stats=True``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch


class CrossEntropyStats(NamedTuple):
    """Per-position statistics of the (soft-capped, tempered) logits ``z``, from the loss's own pass.

    ``lse`` and ``entropy`` are shaped like ``reduction='none'``'s output and are 0 at ignored positions;
    they are in the accumulation dtype (float32 for half-precision logits) and differentiable.
    ``z_loss`` (the z-loss term included in the loss, reduced like it) and ``accuracy`` (the fraction
    of counted positions whose first argmax is the target; None for probability targets) are detached.
    """

    lse: torch.Tensor  # log sum_c exp(z_c)
    z_loss: torch.Tensor  # z_loss * lse**2, reduced like the loss
    accuracy: torch.Tensor | None
    entropy: torch.Tensor  # -sum_c softmax(z)_c log softmax(z)_c


def pack(
    results: torch.Tensor | tuple[torch.Tensor, ...],
    probability: bool,
    none: bool,
    per_position: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> torch.Tensor | tuple[torch.Tensor, CrossEntropyStats]:
    """The loss, or ``(loss, stats)``, from an autograd Function's outputs (the loss, or the loss, lse,
    entropy, z-loss and accuracy); ``per_position`` gives per-position outputs the caller's shape
    (the loss and z-loss too, for ``reduction='none'``)."""
    if isinstance(results, torch.Tensor):
        return per_position(results) if none else results
    loss, lse, entropy, z_value, accuracy = results
    if none:
        loss, z_value = per_position(loss), per_position(z_value)
    return loss, CrossEntropyStats(per_position(lse), z_value, None if probability else accuracy, per_position(entropy))
