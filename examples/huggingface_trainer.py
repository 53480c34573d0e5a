"""Train a tiny Llama with the Hugging Face Trainer and crossent's fused loss, on CPU, in seconds.

    python examples/huggingface_trainer.py

The model is built from a configuration with random weights and the data set is random tokens, so
nothing is downloaded. ``crossent.transformers.patch(model, fused=True)`` makes every training step
take its loss from the hidden states: the (tokens x vocab) logits are never formed.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

import crossent.transformers  # noqa: E402


class RandomTokens(torch.utils.data.Dataset):
    """``count`` sequences of ``length`` random token ids; each is its own labels."""

    def __init__(self, count: int, length: int, vocab: int) -> None:
        self.ids = torch.randint(0, vocab, (count, length), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> list[float]:
    """Train for a few steps; the logged training losses."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = crossent.transformers.patch(transformers.LlamaForCausalLM(config), fused=True)
    with tempfile.TemporaryDirectory() as output_dir:
        args = transformers.TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=4,
            learning_rate=1e-3,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = transformers.Trainer(model=model, args=args, train_dataset=RandomTokens(64, 32, config.vocab_size))
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print("training losses:", " ".join(f"{loss:.3f}" for loss in losses))
    return losses


if __name__ == "__main__":
    main()
