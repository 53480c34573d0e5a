"""crossent: the cross-entropy loss family for PyTorch, exact, fast and lean on memory."""

from crossent import native, nn
from crossent._results import CrossEntropyStats
from crossent.class_weights import class_weights
from crossent.functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    kl_div,
    log_softmax,
    nll_loss,
    softmax,
)
from crossent.fused import LinearCrossEntropyLoss, LinearDistillationLoss, linear_cross_entropy, linear_distillation
from crossent.sigmoid_focal import sigmoid_focal_loss
from crossent.softmax_focal import focal_loss, poly1_cross_entropy

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyStats",
    "LinearCrossEntropyLoss",
    "LinearDistillationLoss",
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "class_weights",
    "cross_entropy",
    "focal_loss",
    "kl_div",
    "linear_cross_entropy",
    "linear_distillation",
    "log_softmax",
    "native",
    "nll_loss",
    "nn",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "softmax",
]
