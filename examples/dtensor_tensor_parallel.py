"""Tensor-parallel training steps with crossent on DTensors, on 2 CPU ranks with gloo.

Run: python examples/dtensor_tensor_parallel.py

The language-model head is a column-parallel ``nn.Linear`` (``parallelize_module`` with
``ColwiseParallel``): each rank holds a slice of the vocabulary rows, and its logits come out as a
DTensor sharded on the class dimension. ``crossent.cross_entropy`` takes that DTensor as it is and
computes the vocab-parallel loss on the local shards; ``crossent.linear_cross_entropy`` takes the
sharded classifier weight and never forms the logits at all. Both return a replicated DTensor, and
``loss.backward()`` reaches the head's sharded weight. Every rank checks the results against one
process holding the whole model, and against torch's own ``loss_parallel()``.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, loss_parallel, parallelize_module

import crossent

WORLD_SIZE = 2
BATCH, SEQUENCE, HIDDEN, VOCAB = 2, 5, 8, 11  # 11 classes over 2 ranks: shards of 6 and 5


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN, dtype=torch.float64)
        self.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False, dtype=torch.float64)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.embed(tokens))


def say(text: str) -> None:
    if dist.get_rank() == 0:
        print(text, flush=True)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQUENCE), generator=g)
    labels = torch.roll(tokens, -1, dims=1)
    labels[:, -1] = -100  # nothing to predict after the last token
    return tokens, labels


def reference() -> tuple[float, torch.Tensor]:
    """One process, the whole model: the loss and the head's weight gradient."""
    torch.manual_seed(1)
    model = TinyLM()
    tokens, labels = batch()
    logits = model.lm_head(model.hidden(tokens))
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    loss.backward()
    assert model.lm_head.weight.grad is not None
    return loss.item(), model.lm_head.weight.grad


def tensor_parallel_model() -> TinyLM:
    torch.manual_seed(1)  # the same initial weights on every rank
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    # use_local_output=False: the head returns its logits as a DTensor sharded on the vocabulary (last dim)
    return parallelize_module(TinyLM(), mesh, {"lm_head": ColwiseParallel(use_local_output=False)})


def train_step(model: TinyLM, fused: bool) -> torch.distributed.tensor.DTensor:
    """One step's loss; the backward fills the sharded ``model.lm_head.weight.grad``."""
    tokens, labels = batch()
    hidden = model.hidden(tokens)
    if fused:  # the classifier weight is a DTensor sharded on the vocabulary: Shard(0) of (V, H)
        loss = crossent.linear_cross_entropy(hidden, model.lm_head.weight, labels)
    else:  # logits (B, T, V) sharded on V; as (B * T, V) they are sharded on the class dim 1
        logits = model.lm_head(hidden)
        loss = crossent.cross_entropy(logits.flatten(0, 1), labels.flatten())
    loss.backward()
    return loss


def run(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    expected_loss, expected_grad = reference()
    say(f"{'single process cross-entropy:':<34} {expected_loss:.12f}")
    for fused, name in ((False, "cross_entropy, DTensor logits:"), (True, "linear_cross_entropy, DTensor W:")):
        model = tensor_parallel_model()
        loss = train_step(model, fused)
        grad = model.lm_head.weight.grad
        error = (grad.full_tensor() - expected_grad).abs().max().item()
        say(
            f"{name:<34} {loss.to_local().item():.12f}   {loss.placements}, "
            f"grad {grad.placements} max |diff| {error:.1e}"
        )

    # torch's own loss_parallel() on the same logits: the same loss
    model = tensor_parallel_model()
    tokens, labels = batch()
    with loss_parallel():
        theirs = F.cross_entropy(model.lm_head(model.hidden(tokens)).flatten(0, 1), labels.flatten())
    say(f"{'torch loss_parallel():':<34} {theirs.to_local().item():.12f}")
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        mp.spawn(run, args=(os.path.join(scratch, "rendezvous"),), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    sys.exit(main())
