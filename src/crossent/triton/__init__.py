"""Triton kernels for the cross-entropy family: the only package of crossent that imports Triton.

Importing it raises ImportError when Triton is missing; ``crossent._dispatch`` turns that into a
visible fallback to the PyTorch path. The launchers below take inputs that ``crossent.functional``
has already validated and normalised (resolved reduction, checked targets) and return tensors
with the same values, dtypes and gradients as the PyTorch path. Each is registered with
``torch.library`` (custom ops with fake and autograd implementations), so
``torch.compile(fullgraph=True)`` traces through them.
"""

import triton  # noqa: F401  (the ImportError the dispatcher reports when Triton is missing)

from crossent.triton._support import SUPPORTED_OPS, unsupported_reason
from crossent.triton.binary_cross_entropy import binary_cross_entropy, binary_cross_entropy_with_logits
from crossent.triton.cross_entropy import cross_entropy
from crossent.triton.kl_div import kl_div
from crossent.triton.linear_cross_entropy import linear_cross_entropy_chunk
from crossent.triton.log_softmax import log_softmax, softmax
from crossent.triton.nll_loss import nll_loss

__all__ = [
    "SUPPORTED_OPS",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_div",
    "linear_cross_entropy_chunk",
    "log_softmax",
    "nll_loss",
    "softmax",
    "unsupported_reason",
]
