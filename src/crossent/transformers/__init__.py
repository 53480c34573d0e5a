"""crossent's loss in Hugging Face transformers models (the ``crossent[transformers]`` extra).

:func:`patch` gives a causal language model crossent's loss in place of transformers' own, with the
same results; ``patch(model, fused=True)`` also takes the training loss from the hidden states
without ever forming the logits. :func:`causal_lm_loss` is a ``loss_function`` on its own, and
:func:`compute_loss_func` the same loss for ``Trainer(compute_loss_func=...)``.
"""

from crossent.transformers._patching import patch
from crossent.transformers.losses import causal_lm_loss, compute_loss_func

__all__ = ["causal_lm_loss", "compute_loss_func", "patch"]
