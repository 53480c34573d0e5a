"""crossent.transformers.patch, plain and fused: the stock model's loss and every parameter gradient, in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from hf_models import FAMILIES, VOCAB, batch, build, oracle, pair, step, transformers

from crossent.transformers import patch
from tests.helpers import assert_close

FUSED = pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
FAMILY = pytest.mark.parametrize("family", FAMILIES)


def compare(family: str, fused: bool, call, atol: float = 1e-12) -> None:
    stock, ours = pair(family)
    patch(ours, fused=fused)
    loss, grads = step(oracle(stock), call)
    our_loss, our_grads = step(ours, call)
    assert_close(our_loss, loss, "loss", atol, 1e-10)
    assert our_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert_close(our_grads[name], grad, f"grad of {name}", atol, 1e-10)


@FUSED
@FAMILY
def test_loss_and_gradients(family, fused):
    ids, labels = batch()
    compare(family, fused, lambda m: m(ids, labels=labels).loss)


@FUSED
@FAMILY
@pytest.mark.parametrize("count", ["int", "tensor"])
def test_num_items_in_batch(family, fused, count):
    ids, labels = batch()
    n = 40 if count == "int" else torch.tensor(40)
    compare(family, fused, lambda m: m(ids, labels=labels, num_items_in_batch=n).loss)


@FUSED
@FAMILY
def test_shift_labels(family, fused):
    ids, labels = batch()
    shifted = torch.roll(labels, -2, dims=1)
    compare(family, fused, lambda m: m(ids, labels=labels, shift_labels=shifted).loss)


@FUSED
@pytest.mark.parametrize("num_items_in_batch", [None, 5], ids=["mean", "sum"])
def test_every_label_ignored(fused, num_items_in_batch):
    ids, _ = batch()
    labels = torch.full_like(ids, -100)
    compare("llama", fused, lambda m: m(ids, labels=labels, num_items_in_batch=num_items_in_batch).loss)


@FUSED
def test_ignore_index(fused):
    ids, labels = batch()
    labels[labels == -100] = 7
    compare("qwen2", fused, lambda m: m(ids, labels=labels, ignore_index=7).loss)


@FUSED
def test_one_position(fused):
    ids, labels = batch(length=1)
    compare("gpt2", fused, lambda m: m(ids, labels=labels, num_items_in_batch=1).loss)


@FUSED
def test_labels_given_by_position(fused):
    ids, labels = batch()
    stock, ours = pair("llama")
    patch(ours, fused=fused)
    out = ours(ids, None, None, None, None, labels)
    assert (out.logits is None) == fused
    assert_close(out.loss, oracle(stock)(ids, labels=labels).loss, "loss", 1e-12, 1e-10)


@FUSED
@FAMILY
def test_gradient_accumulation_equals_one_batch(family, fused):
    ids, labels = batch(size=4)
    kept = (labels[:, 1:] != -100).sum()
    _, ours = pair(family)
    patch(ours, fused=fused)
    big_loss, big = step(ours, lambda m: m(ids, labels=labels, num_items_in_batch=kept).loss)
    ours.zero_grad(set_to_none=True)
    total = 0.0
    for part in (slice(0, 1), slice(1, 4)):
        loss = ours(ids[part], labels=labels[part], num_items_in_batch=kept).loss
        loss.backward()
        total = total + loss.detach()
    assert_close(total, big_loss, "summed loss", 1e-12, 1e-10)
    for name, p in ours.named_parameters():
        assert_close(p.grad, big[name], f"accumulated grad of {name}", 1e-12, 1e-10)


@FUSED
@FAMILY
def test_autocast_bfloat16_no_worse_than_stock(family, fused):
    ids, labels = batch(length=16)
    truth_model, _ = pair(family)
    truth, truth_grads = step(oracle(truth_model), lambda m: m(ids, labels=labels).loss)
    stock, ours = pair(family, torch.float32)
    patch(ours, fused=fused)

    def under_autocast(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(ids, labels=labels).loss

    stock_loss, stock_grads = step(stock, under_autocast)
    our_loss, our_grads = step(ours, under_autocast)
    assert our_loss.dtype == stock_loss.dtype == torch.float32
    stock_error = (stock_loss.double() - truth).abs().item()
    our_error = (our_loss.double() - truth).abs().item()
    assert our_error <= 2 * stock_error + 1e-6, (our_error, stock_error)
    for name, grad in truth_grads.items():
        stock_error = (stock_grads[name].double() - grad).norm().item()
        our_error = (our_grads[name].double() - grad).norm().item()
        assert our_error <= 2 * stock_error + 1e-6 * grad.norm().item(), (name, our_error, stock_error)


@FUSED
@FAMILY
def test_bfloat16_model_returns_a_float32_loss(family, fused):
    ids, labels = batch(length=16)
    truth_model, _ = pair(family)
    truth = oracle(truth_model)(ids, labels=labels).loss
    stock, ours = pair(family, torch.bfloat16)
    patch(ours, fused=fused)
    stock_loss, our_loss = stock(ids, labels=labels).loss, ours(ids, labels=labels).loss
    assert our_loss.dtype == stock_loss.dtype == torch.float32
    assert (our_loss.double() - truth).abs() <= 2 * (stock_loss.double() - truth).abs() + 1e-6
    our_loss.backward()  # the gradients come back in bfloat16
    assert ours.get_output_embeddings().weight.grad.dtype == torch.bfloat16


@FUSED
@FAMILY
def test_calls_without_labels_are_untouched(family, fused):
    ids, _ = batch()
    stock, ours = pair(family)
    patch(ours, fused=fused)
    assert torch.equal(ours(ids).logits, stock(ids).logits)
    with torch.no_grad():  # evaluation with labels keeps its logits, and crossent's loss
        out, expected = ours(ids, labels=ids), oracle(stock)(ids, labels=ids)
    assert torch.equal(out.logits, expected.logits)
    assert_close(out.loss, expected.loss, "loss", 1e-12, 1e-10)


@FUSED
@FAMILY
def test_generate(family, fused):
    ids, _ = batch(size=1, length=4)
    stock, ours = pair(family, torch.float32)
    patch(ours, fused=fused)
    settings = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(ours.generate(ids, **settings), stock.generate(ids, **settings))


def test_fused_training_step_returns_no_logits():
    ids, labels = batch()
    model = patch(build("llama"), fused=True)
    out = model(ids, labels=labels)
    assert out.logits is None and out.loss is not None
    assert "logits" not in out.keys()
    loss, logits, *_ = model(ids, labels=labels, return_dict=False, use_cache=False) + (None,)
    assert loss.dim() == 0 and logits is None


def test_output_embeddings_are_restored_after_an_error():
    ids, labels = batch()
    model = patch(build("gpt2"), fused=True)
    with pytest.raises(ValueError, match=r"got \(3, 3\)"):  # labels of the wrong shape
        model(ids, labels=labels[:, :3])
    assert "forward" not in model.get_output_embeddings().__dict__
    assert model(ids, labels=labels).logits is None


def test_patching_again_replaces_the_patch():
    ids, labels = batch()
    model = patch(patch(build("qwen2"), fused=True), fused=True)
    assert model(ids, labels=labels).logits is None
    patch(model)
    assert model(ids, labels=labels).logits.shape == (*ids.shape, VOCAB)


def test_a_copy_of_a_patched_model_is_patched_on_its_own():
    ids, labels = batch()
    model = patch(build("llama"), fused=True)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.get_output_embeddings().weight.mul_(2)
    assert twin(ids, labels=labels).logits is None
    assert not torch.equal(twin(ids, labels=labels).loss, model(ids, labels=labels).loss)


def _gemma2() -> torch.nn.Module:
    config = transformers.Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        final_logit_softcapping=30.0,
    )
    return transformers.Gemma2ForCausalLM(config)


def test_fused_refuses_soft_capped_logits():
    model = _gemma2()
    with pytest.raises(NotImplementedError, match="final_logit_softcapping"):
        patch(model, fused=True)
    ids, labels = batch()
    expected = model(ids, labels=labels).loss
    assert_close(patch(model)(ids, labels=labels).loss, expected, "loss", 1e-6, 1e-5)


def test_fused_raises_for_logits_changed_before_the_loss():
    model = _gemma2()
    model.config.final_logit_softcapping = None
    patch(model, fused=True)
    model.config.final_logit_softcapping = 30.0
    ids, labels = batch()
    with pytest.raises(NotImplementedError, match="changes its logits"):
        model(ids, labels=labels)
    assert "forward" not in model.get_output_embeddings().__dict__


def test_refuses_other_models():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        patch(torch.nn.Linear(2, 2))
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
    )
    with pytest.raises(ValueError, match="ForSequenceClassification"):
        patch(transformers.LlamaForSequenceClassification(config))
