"""Fused linear + cross-entropy: the loss of ``hidden @ W.T + b`` without materialising the logits."""

from crossent.fused.functional import linear_cross_entropy
from crossent.fused.modules import LinearCrossEntropyLoss

__all__ = ["LinearCrossEntropyLoss", "linear_cross_entropy"]
