"""Peak memory of a training step: the fused loss never holds the (tokens x vocab) logits."""

from __future__ import annotations

import pytest
import torch
from hf_models import batch, build

from crossent.cli._memory import peak_bytes
from crossent.transformers import patch

VOCAB, SIZE, LENGTH = 8192, 4, 512
LOGITS = SIZE * LENGTH * VOCAB * 4  # float32 bytes


def training_step_peak(fused: bool | None) -> int:
    model = build("llama", vocab=VOCAB, layers=1).train()
    if fused is not None:
        patch(model, fused=fused)
    ids, labels = batch(size=SIZE, length=LENGTH, vocab=VOCAB)

    def run() -> None:
        model.zero_grad(set_to_none=True)
        model(ids, labels=labels).loss.backward()

    run()  # the measured step finds its gradients' buffers already freed, as every later step does
    return peak_bytes(run)


@pytest.mark.slow
def test_fused_step_holds_no_logits():
    stock, plain, fused = (training_step_peak(f) for f in (None, False, True))
    assert stock > 2 * LOGITS  # the logits and their gradient, at least
    assert plain < stock
    assert fused < LOGITS / 2, (fused, LOGITS)


def test_memory_measure_ignores_meta_tensors():
    assert peak_bytes(lambda: torch.empty(1000, device="meta")) == 0
