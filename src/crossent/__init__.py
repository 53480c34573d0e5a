"""crossent: the cross-entropy loss family for PyTorch, exact, fast and lean on memory."""

from crossent import nn
from crossent.functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    kl_div,
    log_softmax,
    nll_loss,
    softmax,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_div",
    "log_softmax",
    "nll_loss",
    "nn",
    "softmax",
]
