"""Tiny random-weight causal language models built from configurations (no download), and their losses."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", minversion="4.50")  # not the tests/transformers folder

VOCAB = 101
FAMILIES = ("llama", "qwen2", "gpt2")


def build(family: str, vocab: int = VOCAB, hidden: int = 32, layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """A causal LM of ``family`` with random weights; GPT-2 ties its output embeddings to its input ones."""
    transformers.logging.set_verbosity_error()
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=64)
        model_class = transformers.GPT2LMHeadModel
    else:
        config_class, model_class = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        }[family]
        config = config_class(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    torch.manual_seed(seed)
    return model_class(config).eval()  # no dropout: two runs of one batch agree


def pair(family: str, dtype: torch.dtype = torch.float64, **kwargs: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(stock, copy): the same weights twice, in ``dtype``."""
    stock = build(family, **kwargs).to(dtype)
    return stock, copy.deepcopy(stock)


def batch(seed: int = 1, size: int = 3, length: int = 9, vocab: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and labels (the ids, some ignored) of ``size`` sequences."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (size, length), generator=generator)
    labels = ids.clone()
    labels[torch.rand(size, length, generator=generator) < 0.3] = -100
    return ids, labels


def step(model: torch.nn.Module, call: Callable[[torch.nn.Module], torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """The loss ``call(model)`` returns and every parameter's gradient after its backward."""
    model.zero_grad(set_to_none=True)
    loss = call(model)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def float64_causal_lm_loss(
    logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None, **kwargs
):
    """transformers' ``ForCausalLMLoss`` without its cast to float32: the oracle for float64 models.

    ``test_oracle_is_transformers_loss`` checks it against transformers' own in float32.
    """
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    if shift_labels is None:
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:].contiguous()
    logits = logits.view(-1, vocab_size)
    return loss_utils.fixed_cross_entropy(logits, shift_labels.view(-1), num_items_in_batch, ignore_index)


def oracle(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with transformers' loss, kept in float64 for a float64 model."""
    if next(model.parameters()).dtype == torch.float64:
        model.loss_function = float64_causal_lm_loss
    return model
