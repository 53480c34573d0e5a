"""The Trainer with a patched model (plain, fused) or compute_loss_func trains as with transformers' loss; the
example script and the guide's examples run."""

from __future__ import annotations

import re
import runpy
import tempfile
from pathlib import Path

import pytest
import torch
from hf_models import batch, build, transformers

import crossent.transformers

pytest.importorskip("accelerate")  # the Trainer needs it
ROOT = Path(__file__).parents[2]


class Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids, self.labels = batch(seed=3, size=8, length=12)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def train(model: torch.nn.Module, **trainer_options) -> tuple[list[float], dict[str, torch.Tensor]]:
    with tempfile.TemporaryDirectory() as output_dir:
        args = transformers.TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=0.5,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            dataloader_drop_last=True,
            seed=0,
            optim="sgd",  # Adam's normalisation would magnify rounding in near-zero gradients
        )
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), **trainer_options)
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_trainer_losses_and_weights_match_transformers(capsys):
    expected_losses, expected = train(build("gpt2"))
    runs = {
        "plain": train(crossent.transformers.patch(build("gpt2"))),
        "fused": train(crossent.transformers.patch(build("gpt2"), fused=True)),
        "compute_loss_func": train(build("gpt2"), compute_loss_func=crossent.transformers.compute_loss_func),
    }
    for name, (losses, weights) in runs.items():
        assert losses == pytest.approx(expected_losses, rel=1e-5), name
        for key, value in expected.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=1e-4, msg=f"{name}: {key}")


@pytest.mark.slow
def test_example_script_trains(capsys):
    losses = runpy.run_path(str(ROOT / "examples" / "huggingface_trainer.py"))["main"]()
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)


GUIDE = (ROOT / "docs" / "guide" / "huggingface.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE, re.S)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_block_runs_on_its_own(index, capsys):
    exec(compile(BLOCKS[index], f"huggingface.md block {index}", "exec"), {"__name__": "__guide__"})


@pytest.mark.slow
def test_guide_runs_top_to_bottom(capsys):
    assert BLOCKS
    exec(compile("\n".join(BLOCKS), "huggingface.md", "exec"), {"__name__": "__guide__"})
