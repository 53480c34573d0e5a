"""The fused causal-LM loss of a patched model: its loss from the hidden states, the logits never formed.

A patched model carries two forward hooks and a :class:`FusedCausalLMLoss` as its ``loss_function``.
When a call has labels and gradients are enabled, the pre-hook replaces the ``forward`` of the
model's output embeddings (``get_output_embeddings()``), for that call only, by one that keeps the
hidden states and returns a placeholder of the logits' shape (one stored element). The model's own
forward then hands that placeholder to ``loss_function``, which takes the loss of the kept hidden
states and the embeddings' weight with :func:`crossent.linear_cross_entropy`. The post-hook puts the
embeddings' ``forward`` back and returns the model's output without the placeholder (``logits`` is
None). Nothing of the model's forward is copied, so it works for every model whose forward ends in
``logits = lm_head(hidden_states)`` then ``loss_function(logits, labels, ...)``, and it says so when a
model does something else.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

import crossent
from crossent.transformers.losses import HALF_DTYPES, causal_lm_loss, reduction_of

_MISSING = object()


@dataclass
class _Step:
    """One labelled call in flight: the output embeddings, what their instance ``forward`` was, and what they saw."""

    head: torch.nn.Module
    saved_forward: Any
    weight: torch.Tensor
    bias: torch.Tensor | None
    hidden: torch.Tensor | None = None
    placeholder: torch.Tensor | None = None
    consumed: bool = False


@dataclass
class FusedCausalLMLoss:
    """A patched model's ``loss_function``: the fused loss for the call in flight, else :func:`causal_lm_loss`.

    ``labels_position``: where ``labels`` sits among the model's positional ``forward`` arguments.
    """

    model_name: str
    labels_position: int | None
    steps: dict[int, _Step] = field(default_factory=dict)  # per thread: nn.DataParallel replicas share this

    def __call__(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        vocab_size: int,
        num_items_in_batch: torch.Tensor | int | None = None,
        ignore_index: int = -100,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        step = self.steps.get(threading.get_ident())
        if step is None or step.placeholder is None:
            return causal_lm_loss(logits, labels, vocab_size, num_items_in_batch, ignore_index, shift_labels)
        if logits is not step.placeholder:
            raise NotImplementedError(
                f"{self.model_name} changes its logits between its output embeddings and its loss_function "
                "(a soft-capping or a scale, say), which crossent.transformers.patch(fused=True) cannot see; "
                "patch it with fused=False"
            )
        assert step.hidden is not None
        step.consumed = True
        return fused_loss(
            step.hidden, step.weight, step.bias, labels, vocab_size, num_items_in_batch, ignore_index, shift_labels
        )

    def begin(self, head: torch.nn.Module | None) -> None:
        """Make ``head``'s next call keep its input and return a placeholder, in this thread's call."""
        weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
        if head is None or not isinstance(weight, torch.Tensor):
            raise TypeError(
                f"{self.model_name}.get_output_embeddings() returned {type(head).__name__}, not a linear layer "
                "with a weight: crossent.transformers.patch(fused=True) cannot take its loss from the hidden states"
            )
        step = _Step(
            head, head.__dict__.get("forward", _MISSING), weight, bias if isinstance(bias, torch.Tensor) else None
        )
        vocab = weight.shape[0]

        def keep_hidden_states(hidden: torch.Tensor) -> torch.Tensor:
            if step.placeholder is not None:
                raise NotImplementedError(
                    f"{self.model_name} calls its output embeddings more than once in a forward; "
                    "crossent.transformers.patch(fused=True) supports one call"
                )
            step.hidden = hidden
            step.placeholder = hidden.new_zeros(()).expand(*hidden.shape[:-1], vocab)
            return step.placeholder

        head.forward = keep_hidden_states
        self.steps[threading.get_ident()] = step

    def end(self) -> _Step | None:
        """Put back the output embeddings' ``forward``; this thread's step, if one was in flight."""
        step = self.steps.pop(threading.get_ident(), None)
        if step is not None:
            if step.saved_forward is _MISSING:
                del step.head.forward
            else:
                step.head.forward = step.saved_forward
        return step


def fused_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None,
    ignore_index: int,
    shift_labels: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`causal_lm_loss` of ``F.linear(hidden, weight, bias)``, by :func:`crossent.linear_cross_entropy`."""
    if weight.shape[0] != vocab_size:
        raise ValueError(
            f"the output embeddings have {weight.shape[0]} rows but the vocabulary has {vocab_size} entries"
        )
    if shift_labels is not None:
        target, shift = shift_labels, 0
    elif labels.shape[-1] > 1:
        target, shift = labels, 1  # read through a view: the labels are not copied to shift them
    else:  # a single position predicts nothing
        target, shift = torch.full_like(labels, ignore_index), 0
    reduction, normalizer = reduction_of(num_items_in_batch, hidden.device)
    # a float32 loss of half-precision hidden states, as transformers' upcast gives (autocast sets its own)
    upcast = hidden.dtype in HALF_DTYPES and not torch.is_autocast_enabled(hidden.device.type)
    return crossent.linear_cross_entropy(
        hidden,
        weight,
        target.to(hidden.device),
        linear_bias=bias,
        reduction=reduction,
        ignore_index=ignore_index,
        normalizer=normalizer,
        shift=shift,
        _logits_dtype=torch.float32 if upcast else None,
    )


def _loss_of(module: torch.nn.Module) -> FusedCausalLMLoss | None:
    loss = module.__dict__.get("_loss_function")
    return loss if isinstance(loss, FusedCausalLMLoss) else None


def begin_step(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Forward pre-hook: a labelled call with gradients enabled takes the fused loss."""
    loss = _loss_of(module)
    if loss is None or not torch.is_grad_enabled():
        return
    labels = kwargs.get("labels")
    if labels is None and loss.labels_position is not None and loss.labels_position < len(args):
        labels = args[loss.labels_position]
    if labels is not None:
        loss.begin(module.get_output_embeddings())  # type: ignore[operator]


def end_step(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    """Forward hook (also called when the forward raised): restore the embeddings, drop the placeholder."""
    loss = _loss_of(module)
    step = loss.end() if loss is not None else None
    if step is None or step.placeholder is None or output is None:
        return None
    if not step.consumed:
        raise NotImplementedError(
            f"{type(module).__name__} did not take its loss through loss_function from its output embeddings' "
            "result; crossent.transformers.patch(fused=True) cannot compute it, patch it with fused=False"
        )
    placeholder = step.placeholder
    if isinstance(output, Mapping):
        return type(output)(**{key: value for key, value in output.items() if value is not placeholder})
    return type(output)(value for value in output if value is not placeholder)
