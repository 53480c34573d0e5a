"""causal_lm_loss and compute_loss_func against transformers' ForCausalLMLoss."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from hf_models import float64_causal_lm_loss, transformers  # noqa: F401 (skips without transformers)

from crossent.cli._memory import peak_bytes
from crossent.transformers import causal_lm_loss, compute_loss_func
from tests.helpers import check_against

loss_utils = importlib.import_module("transformers.loss.loss_utils")
V = 37


def case(seed: int = 0, shape: tuple[int, int] = (3, 11), ignored: float = 0.3):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, V, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, V, shape, generator=generator)
    labels[torch.rand(shape, generator=generator) < ignored] = -100
    return logits, labels


@pytest.mark.parametrize("num_items_in_batch", [None, 17, "tensor"])
@pytest.mark.parametrize("ignored", [0.0, 0.3, 1.0], ids=["none", "some", "all"])
def test_against_transformers_in_float64(num_items_in_batch, ignored):
    logits, labels = case(ignored=ignored)
    n = torch.tensor(17) if num_items_in_batch == "tensor" else num_items_in_batch
    check_against(causal_lm_loss, float64_causal_lm_loss, (logits, labels, V, n))


def test_shift_labels_and_ignore_index():
    logits, labels = case()
    shifted = labels.roll(3, dims=1)
    shifted[shifted == -100] = 5
    kwargs = {"ignore_index": 5, "shift_labels": shifted}
    check_against(causal_lm_loss, float64_causal_lm_loss, (logits, labels, V), kwargs)


def test_extra_keyword_arguments_are_ignored():
    logits, labels = case()
    check_against(causal_lm_loss, float64_causal_lm_loss, (logits, labels, V), {"output_attentions": False})


def test_oracle_is_transformers_loss():
    """The float64 oracle is ForCausalLMLoss, bit for bit, where ForCausalLMLoss's cast does nothing."""
    logits, labels = case()
    logits = logits.float()
    for n in (None, 9):
        assert torch.equal(
            float64_causal_lm_loss(logits, labels, V, n), loss_utils.ForCausalLMLoss(logits, labels, V, n)
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_against_transformers(dtype):
    logits, labels = case(shape=(4, 300))
    x = logits.to(dtype)
    ours = causal_lm_loss(x, labels, V, 500)
    theirs = loss_utils.ForCausalLMLoss(x, labels, V, 500)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    (grad_ours,) = torch.autograd.grad(causal_lm_loss(a, labels, V), a)
    (grad_theirs,) = torch.autograd.grad(loss_utils.ForCausalLMLoss(b, labels, V), b)
    assert grad_ours.dtype == dtype
    torch.testing.assert_close(grad_ours, grad_theirs, atol=2e-3 if dtype != torch.float32 else 1e-7, rtol=0)


def test_no_float32_copy_of_half_logits():
    logits, labels = case(shape=(8, 512))
    x = logits.bfloat16().requires_grad_()
    size = x.numel() * 4  # the float32 copy transformers makes
    assert peak_bytes(lambda: causal_lm_loss(x, labels, V).backward()) < size
    assert peak_bytes(lambda: loss_utils.ForCausalLMLoss(x, labels, V).backward()) > size


def test_compute_loss_func_reads_logits_of_dicts_and_tuples():
    logits, labels = case()
    expected = float64_causal_lm_loss(logits, labels, V, 13)
    for outputs in ({"logits": logits, "loss": None}, (logits,)):
        torch.testing.assert_close(compute_loss_func(outputs, labels, num_items_in_batch=13), expected)


@pytest.mark.parametrize("name", ["crossent.transformers.losses", "crossent.transformers._patching"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
