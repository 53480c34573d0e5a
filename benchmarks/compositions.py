"""The language-model options as a PyTorch user writes them today: the baselines of their benchmarks.

Each takes the keywords of crossent's options, so one call serves both implementations. An
``entropy_bonus`` subtracts ``entropy_bonus * mean entropy`` from the loss, as an RL objective does,
so the entropy's gradient is part of the measured step (the entropy is 0 at ignored positions, as
crossent reports it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import crossent


def _transformed(x: torch.Tensor, softcap: float | None, temperature: float) -> torch.Tensor:
    z = x if softcap is None else softcap * torch.tanh(x / softcap)
    return z if temperature == 1.0 else z / temperature


def torch_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    entropy_bonus: float = 0.0,
) -> torch.Tensor:
    """Softcap, temperature, z-loss and the statistics composed from torch ops on the full logits."""
    z = _transformed(input, softcap, temperature)
    loss = F.cross_entropy(z, target)
    kept = target != -100
    if z_loss or entropy_bonus:
        lse = torch.logsumexp(z, -1)
        loss = loss + z_loss * (lse.square() * kept).sum() / kept.sum()
    if entropy_bonus:
        log_p = torch.log_softmax(z, -1)
        entropy = -(log_p.exp() * log_p).sum(-1) * kept  # 0 at ignored positions, as crossent's
        accuracy = ((z.argmax(-1) == target) & kept).sum() / kept.sum()
        loss = loss - entropy_bonus * entropy.mean() + 0 * accuracy
    return loss


def torch_linear_cross_entropy(
    input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, **options: float | None
) -> torch.Tensor:
    """The composition on ``input @ linear_weight.T``: materialises the ``(N, V)`` logits."""
    return torch_cross_entropy(F.linear(input, linear_weight), target, **options)  # type: ignore[arg-type]


def crossent_cross_entropy(
    input: torch.Tensor, target: torch.Tensor, *, entropy_bonus: float = 0.0, **options: float | None
) -> torch.Tensor:
    if not entropy_bonus:
        return crossent.cross_entropy(input, target, **options)  # type: ignore[arg-type]
    loss, stats = crossent.cross_entropy(input, target, return_stats=True, **options)  # type: ignore[arg-type]
    return loss - entropy_bonus * stats.entropy.mean()


def crossent_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    entropy_bonus: float = 0.0,
    **options: float | None,
) -> torch.Tensor:
    if not entropy_bonus:
        return crossent.linear_cross_entropy(input, linear_weight, target, **options)  # type: ignore[arg-type]
    loss, stats = crossent.linear_cross_entropy(input, linear_weight, target, return_stats=True, **options)  # type: ignore[arg-type]
    return loss - entropy_bonus * stats.entropy.mean()


def _target_terms(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position: the cross-entropy, ``p_t`` through the full softmax, and whether it is counted."""
    kept = target != -100
    p_t = input.softmax(-1).gather(-1, torch.where(kept, target, 0).unsqueeze(-1)).squeeze(-1)
    return F.cross_entropy(input, target, reduction="none"), p_t, kept


def torch_focal_loss(input: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0) -> torch.Tensor:
    """The softmax focal loss as commonly written: ``(1 - p_t) ** gamma * ce`` through the full softmax."""
    ce, p_t, kept = _target_terms(input, target)
    return ((1 - p_t) ** gamma * ce).sum() / kept.sum()


def torch_poly1_cross_entropy(input: torch.Tensor, target: torch.Tensor, *, epsilon: float = 1.0) -> torch.Tensor:
    """PolyLoss's poly-1 as commonly written: ``ce + epsilon (1 - p_t)`` through the full softmax."""
    ce, p_t, kept = _target_terms(input, target)
    return torch.where(kept, ce + epsilon * (1 - p_t), 0).sum() / kept.sum()


def torch_soft_focal_loss(input: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0) -> torch.Tensor:
    """The focal loss of class probabilities ``q``: ``-sum_c q_c (1 - p_c) ** gamma log p_c``, averaged."""
    log_p = input.log_softmax(-1)
    return -(target * (1 - log_p.exp()) ** gamma * log_p).sum(-1).mean()
