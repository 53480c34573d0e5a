"""crossent: the cross-entropy loss family for PyTorch, exact, fast and lean on memory."""

from crossent import native, nn
from crossent._results import CrossEntropyStats
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

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyStats",
    "LinearCrossEntropyLoss",
    "LinearDistillationLoss",
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_div",
    "linear_cross_entropy",
    "linear_distillation",
    "log_softmax",
    "native",
    "nll_loss",
    "nn",
    "softmax",
]
