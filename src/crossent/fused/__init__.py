"""Fused linear + loss: cross-entropy of ``hidden @ W.T + b``, and distillation between two such
projections, without materialising the logits."""

from crossent.fused.distillation import linear_distillation
from crossent.fused.functional import linear_cross_entropy
from crossent.fused.modules import LinearCrossEntropyLoss, LinearDistillationLoss

__all__ = ["LinearCrossEntropyLoss", "LinearDistillationLoss", "linear_cross_entropy", "linear_distillation"]
