"""``patch``: a transformers causal language model with crossent's loss in place of its own."""

from __future__ import annotations

import inspect
from typing import TypeVar

import torch

from crossent.transformers._fused import FusedCausalLMLoss, begin_step, end_step
from crossent.transformers.losses import causal_lm_loss

M = TypeVar("M", bound=torch.nn.Module)

# configuration entries of models that change their logits between the output embeddings and the loss
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale")


def patch(model: M, *, fused: bool = False) -> M:
    r"""Give a transformers causal language model crossent's loss; returns ``model``, patched in place.

    The loss is transformers' ``ForCausalLMLoss`` (:func:`crossent.transformers.causal_lm_loss`):
    position ``t`` predicts label ``t + 1`` (or ``shift_labels[t]``), with ``y`` those labels and
    ``m_n = [y_n != ignore_index]``::

        l_n = m_n * (log sum_c exp(x[n, c]) - x[n, y_n]),    x = lm_head(hidden_states)

    Reductions: the mean ``sum_n l_n / sum_n m_n``, or ``sum_n l_n / num_items_in_batch`` when the
    call passes ``num_items_in_batch`` (the Trainer does, for gradient accumulation).

    ``fused=False`` sets ``model.loss_function`` to :func:`crossent.transformers.causal_lm_loss`: the
    same values and gradients as the model's own loss, without its float32 copy of half-precision
    logits. ``fused=True`` also takes the loss of labelled calls made with gradients enabled (training
    steps) straight from the last hidden states and the output embeddings' weight (and bias) by
    :func:`crossent.linear_cross_entropy`: the ``(B, T, V)`` logits are never formed, and the output's
    ``logits`` is None. Calls without labels (``generate``, inference) and calls under
    ``torch.no_grad()`` (evaluation) return their logits as before, evaluation with crossent's loss.

    The model's ``forward`` is left as it is: ``fused=True`` adds two forward hooks, which, during a
    training step only, swap the output embeddings' ``forward`` for one that keeps its input. It
    needs a model whose forward passes ``lm_head(hidden_states)`` unchanged to ``loss_function``; it
    refuses models that soft-cap or scale their logits (``final_logit_softcapping``, ``logit_scale``),
    and raises for any other that does not. Patching again replaces the earlier patch.

    Args:
        model: a transformers ``PreTrainedModel`` whose loss is the causal-LM loss (``...ForCausalLM``).
        fused: take the training loss from the hidden states, without the logits.

    Shape:
        ====================  ============  ================================================
        input_ids, labels     hidden        logits (in the output)
        ====================  ============  ================================================
        ``(B, T)``            ``(B, T, H)``  ``(B, T, V)``; None for a fused training step
        ====================  ============  ================================================

    Example:
        >>> import torch, transformers
        >>> import crossent.transformers
        >>> transformers.logging.set_verbosity_error()
        >>> config = transformers.LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64,
        ...     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
        >>> _ = torch.manual_seed(0)
        >>> model = transformers.LlamaForCausalLM(config)
        >>> ids = torch.randint(0, 101, (2, 8))
        >>> stock = model(ids, labels=ids).loss
        >>> model = crossent.transformers.patch(model, fused=True)
        >>> out = model(ids, labels=ids)
        >>> out.logits is None, torch.allclose(out.loss, stock)
        (True, True)
        >>> model(ids).logits.shape  # no labels: the logits, as before
        torch.Size([2, 8, 101])
    """
    from transformers import PreTrainedModel
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    name = type(model).__name__
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"crossent.transformers.patch takes a transformers PreTrainedModel, got {name}")
    loss_type = getattr(model, "loss_type", None)
    if loss_type in LOSS_MAPPING and LOSS_MAPPING[loss_type] is not ForCausalLMLoss:
        raise ValueError(f"{name}'s loss is {loss_type!r}; crossent.transformers.patch replaces the causal-LM loss")
    if not fused:
        model.loss_function = causal_lm_loss
        return model
    config = model.config.get_text_config()
    transforms = [key for key in _LOGIT_TRANSFORMS if getattr(config, key, None) not in (None, 1.0)]
    if transforms:
        raise NotImplementedError(
            f"{name} changes its logits before the loss ({', '.join(transforms)}), which "
            "crossent.transformers.patch(fused=True) does not do; patch it with fused=False"
        )
    parameters = list(inspect.signature(model.forward).parameters)
    position = parameters.index("labels") if "labels" in parameters else None
    model.loss_function = FusedCausalLMLoss(name, position)
    if not getattr(model, "_crossent_fused_hooks", False):  # the hooks do nothing once the loss is replaced
        model.register_forward_pre_hook(begin_step, with_kwargs=True)
        model.register_forward_hook(end_step, with_kwargs=True, always_call=True)
        vars(model)["_crossent_fused_hooks"] = True
    return model
