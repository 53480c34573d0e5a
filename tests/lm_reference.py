"""The language-model options composed from plain torch: the oracle of every path's tests."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Reference(NamedTuple):
    loss: torch.Tensor
    lse: torch.Tensor
    entropy: torch.Tensor
    z_loss: torch.Tensor
    accuracy: torch.Tensor | None


def transformed(x: torch.Tensor, softcap: float | None, temperature: float) -> torch.Tensor:
    """``z = softcap tanh(x / softcap) / temperature``."""
    z = x if softcap is None else softcap * torch.tanh(x / softcap)
    return z / temperature


def reference(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
) -> Reference:
    """Loss and statistics of ``z`` with the class dim at 1 (or 0 for an unbatched ``(C,)``)."""
    dim = 0 if x.dim() == 1 else 1
    z = transformed(x, softcap, temperature)
    probability = x.shape == target.shape
    ce = F.cross_entropy(
        z, target, weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )
    counted = torch.ones(z.sum(dim).shape, dtype=torch.bool) if probability else target != ignore_index
    lse = torch.where(counted, torch.logsumexp(z, dim), 0)
    entropy = torch.where(counted, torch.special.entr(z.softmax(dim)).sum(dim), 0)
    term = z_loss * lse.square()
    count = counted.sum()
    z_value = term if reduction == "none" else term.sum() / count if reduction == "mean" else term.sum()
    if z_loss == 0:
        z_value = torch.zeros_like(z_value)  # no z-loss term: 0, even where a 'mean' has nothing to count
    accuracy = None
    if not probability:
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        accuracy = (counted & (z.argmax(dim) == target)).sum().to(acc) / count
    return Reference(ce + z_value, lse, entropy, z_value, accuracy)
