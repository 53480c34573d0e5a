"""transformers' causal-LM loss on crossent: ``ForCausalLMLoss``'s results without its float32 copy of the logits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

import crossent
from crossent._reduction import Reduction

__all__ = ["causal_lm_loss", "compute_loss_func"]

HALF_DTYPES = (torch.float16, torch.bfloat16)  # the dtypes transformers upcasts to a float32 loss


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    r"""transformers' ``ForCausalLMLoss``, computed by :func:`crossent.cross_entropy`: a ``loss_function``.

    Position ``t`` of each sequence predicts label ``t + 1`` (the last position predicts nothing),
    or ``shift_labels[t]`` when those already-shifted labels are given. With ``y`` the shifted labels
    and ``m_n = [y_n != ignore_index]`` over the ``N = B * T`` positions::

        l_n = m_n * (log sum_c exp(x[n, c]) - x[n, y_n])

    Reductions: without ``num_items_in_batch`` the mean, ``sum_n l_n / sum_n m_n`` (nan when every
    label is ignored); with it, ``sum_n l_n / num_items_in_batch`` (what makes gradient accumulation
    over micro-batches equal one big batch: pass the count of kept labels of the whole batch).

    The values and gradients are those of ``ForCausalLMLoss``. It upcasts half-precision logits to a
    float32 copy first; crossent reads them as they are, accumulates in float32 and returns the loss in
    float32 all the same. float64 logits keep a float64 loss (transformers rounds it to float32).
    Other keyword arguments (those the model passes along) are ignored, as transformers does.

    Args:
        logits: ``(B, T, V)`` (any shape whose elements are ``(*, V)`` rows).
        labels: ``(B, T)`` class ids; read only when ``shift_labels`` is None.
        vocab_size: ``V``.
        num_items_in_batch: the divisor of the summed loss (an int or a one-element tensor), or None.
        ignore_index: labels equal to it count for nothing.
        shift_labels: ``(B, T)`` labels already aligned with the positions that predict them.

    Shape:
        ===============  ==============================  =======
        logits           labels / shift_labels           output
        ===============  ==============================  =======
        ``(B, T, V)``    ``(B, T)``                      ``()``
        ===============  ==============================  =======

    Example:
        >>> import torch
        >>> from crossent.transformers import causal_lm_loss
        >>> logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
        >>> labels = torch.tensor([[0, 1, 2]])  # position 0 predicts 1, position 1 predicts 2
        >>> round(causal_lm_loss(logits, labels, vocab_size=3).item(), 4)
        1.8955
        >>> round(causal_lm_loss(logits, labels, vocab_size=3, num_items_in_batch=4).item(), 4)
        0.9477
        >>> causal_lm_loss(logits.bfloat16(), labels, vocab_size=3).dtype
        torch.float32
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    reduction, normalizer = reduction_of(num_items_in_batch, logits.device)
    return crossent.cross_entropy(
        logits.reshape(-1, vocab_size),
        shift_labels.reshape(-1).to(logits.device),
        ignore_index=ignore_index,
        reduction=reduction,
        normalizer=normalizer,
        _loss_dtype=torch.float32 if logits.dtype in HALF_DTYPES else None,
    )


def compute_loss_func(
    outputs: Mapping[str, Any] | tuple[Any, ...],
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    r""":func:`causal_lm_loss` of a model's outputs: ``Trainer(compute_loss_func=...)``.

    The Trainer pops the labels before it calls the model, so the model returns its logits
    ``outputs["logits"]`` (``outputs[0]`` for a tuple) and this takes the loss of them; the formula and
    reductions are :func:`causal_lm_loss`'s, with ``ignore_index=-100``. The logits exist in full: the
    fused loss of :func:`crossent.transformers.patch` (``fused=True``) needs the model to receive its
    labels, so it is used without a ``compute_loss_func``.

    Args:
        outputs: what the model returned.
        labels: ``(B, T)`` class ids, unshifted.
        num_items_in_batch: the Trainer's count of kept labels over the accumulated batch, or None.

    Shape:
        ===========================  ===========  =======
        outputs["logits"]            labels       output
        ===========================  ===========  =======
        ``(B, T, V)``                ``(B, T)``   ``()``
        ===========================  ===========  =======

    Example:
        >>> import torch
        >>> from crossent.transformers import compute_loss_func
        >>> outputs = {"logits": torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])}
        >>> round(compute_loss_func(outputs, torch.tensor([[0, 1, 2]]), num_items_in_batch=2).item(), 4)
        1.8955
    """
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    return causal_lm_loss(logits, labels, logits.shape[-1], num_items_in_batch)


def reduction_of(
    num_items_in_batch: torch.Tensor | int | None, device: torch.device
) -> tuple[Reduction, torch.Tensor | int | None]:
    """transformers' reduction: the mean, or the sum divided by ``num_items_in_batch`` (on ``device``)."""
    if num_items_in_batch is None:
        return "mean", None
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(device)
    return "sum", num_items_in_batch
