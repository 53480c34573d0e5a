"""NumPy reference implementations of the cross-entropy family, without torch.

Each function takes the arguments of its ``torch.nn.functional`` namesake and returns the same values
(shapes, dtypes, reductions, ignored targets, label smoothing, non-finite behaviour and exception
classes), on float32/float64 ``numpy.ndarray`` inputs. Each has a ``*_grad`` partner returning
``∂ loss / ∂ input`` for an upstream gradient ``grad_output`` (default 1), with the loss's other
arguments as keywords.

The code is meant to be read: every function transcribes the formula in its docstring, using only the
stable identities (log-sum-exp, ``log σ(x) = min(x, 0) - log1p(exp(-|x|))``). It is the oracle that
crossent's faster paths are tested against, not a fast path itself.

Example:
    >>> import numpy as np
    >>> from crossent import numpy as cnp
    >>> logits = np.array([[2.0, 0.5, 0.3], [0.2, 1.5, 0.1]])
    >>> labels = np.array([0, 1])
    >>> print(round(float(cnp.cross_entropy(logits, labels)), 6))
    0.379377
    >>> cnp.cross_entropy_grad(logits, labels).shape
    (2, 3)
"""

from ._bce import binary_cross_entropy, binary_cross_entropy_grad
from ._bce_with_logits import binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_grad
from ._cross_entropy import cross_entropy, cross_entropy_grad
from ._kl import kl_div, kl_div_grad
from ._nll import nll_loss, nll_loss_grad
from ._softmax import log_softmax, log_softmax_grad, softmax, softmax_grad

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "kl_div",
    "kl_div_grad",
    "log_softmax",
    "log_softmax_grad",
    "nll_loss",
    "nll_loss_grad",
    "softmax",
    "softmax_grad",
]
