"""Vocab-parallel and data-parallel cross-entropy with crossent.distributed, on CPU with gloo.

Run: torchrun --nproc-per-node 2 examples/vocab_parallel.py

Every rank builds the same global tensors from one seed, keeps its slice of the classes, and checks
that the vocab-parallel loss and its gradients equal the single-process ones. Then the ranks act as
data-parallel replicas with uneven micro-batches: summing each micro-batch's loss divided by the
global count of kept targets gives exactly the full-batch mean, where averaging means does not.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

import crossent
from crossent.distributed import (
    count_targets,
    normalized_sum,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
    vocab_range,
)

BATCH, HIDDEN, VOCAB = 8, 16, 11  # 11 classes over 2 ranks: uneven shards, 6 + 5


def say(text: str) -> None:
    if dist.get_rank() == 0:
        print(text, flush=True)


def vocab_parallel(group: dist.ProcessGroup) -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(BATCH, HIDDEN, dtype=torch.float64, generator=g)
    classifier = torch.randn(VOCAB, HIDDEN, dtype=torch.float64, generator=g)
    target = torch.randint(0, VOCAB, (BATCH,), generator=g)
    target[::3] = -100  # some ignored positions

    width = len(torch.tensor_split(torch.arange(VOCAB), dist.get_world_size())[dist.get_rank()])
    start, stop = vocab_range(width, group)  # this rank's classes, once at setup

    # the reference: one process, the whole vocabulary
    full = hidden @ classifier.T
    full.requires_grad_()
    expected = crossent.cross_entropy(full, target, label_smoothing=0.1)
    expected.backward()

    # vocab parallel: this rank holds logits[:, start:stop] only
    shard = full.detach()[:, start:stop].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(shard, target, label_smoothing=0.1, process_group=group)
    loss.backward()
    grad_error = (shard.grad - full.grad[:, start:stop]).abs().max()
    dist.all_reduce(grad_error, op=dist.ReduceOp.MAX, group=group)
    say(f"single process cross-entropy: {expected.item():.12f}")
    say(f"vocab-parallel cross-entropy: {loss.item():.12f}   max |grad difference| {grad_error:.1e}")

    # fused linear + cross-entropy with the classifier sharded by class; the input gradient is all-reduced
    h = hidden.clone().requires_grad_()
    rows = classifier[start:stop].clone().requires_grad_()
    linear_loss = vocab_parallel_linear_cross_entropy(h, rows, target, label_smoothing=0.1, process_group=group)
    linear_loss.backward()
    h_full, w_full = hidden.clone().requires_grad_(), classifier.clone().requires_grad_()
    crossent.cross_entropy(h_full @ w_full.T, target, label_smoothing=0.1).backward()
    grad_error = torch.maximum((h.grad - h_full.grad).abs().max(), (rows.grad - w_full.grad[start:stop]).abs().max())
    dist.all_reduce(grad_error, op=dist.ReduceOp.MAX, group=group)
    say(f"vocab-parallel linear CE:     {linear_loss.item():.12f}   max |grad difference| {grad_error:.1e}")


def gradient_accumulation(group: dist.ProcessGroup) -> None:
    """Data parallel: each rank has two micro-batches of different sizes and ignore patterns."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = torch.nn.Linear(HIDDEN, VOCAB, dtype=torch.float64)
    torch.nn.init.normal_(model.weight, generator=torch.Generator().manual_seed(1))
    torch.nn.init.zeros_(model.bias)

    def micro_batches(owner: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(100 + owner)
        out = []
        for size in (3, 9):
            x = torch.randn(size, HIDDEN, dtype=torch.float64, generator=g)
            y = torch.randint(0, VOCAB, (size,), generator=g)
            y[: (owner + size) % 3] = -100
            out.append((x, y))
        return out

    mine = micro_batches(rank)
    # 1. count the kept targets of the whole step, over every micro-batch and every rank (one all-reduce)
    count = count_targets(torch.cat([y for _, y in mine]), process_group=group)
    # 2. each micro-batch: summed loss / global count, backward accumulates
    total = torch.zeros((), dtype=torch.float64)
    wrong = torch.zeros((), dtype=torch.float64)
    for x, y in mine:
        loss = normalized_sum(crossent.cross_entropy(model(x), y, reduction="none"), count)
        loss.backward()
        total += loss.detach()
        wrong += crossent.cross_entropy(model(x), y).detach() / (len(mine) * world)  # mean of means
    # 3. sum over ranks (DDP averages instead: then pass normalizer=count / world_size)
    for t in (total, wrong, model.weight.grad):
        dist.all_reduce(t, group=group)

    everything = [b for owner in range(world) for b in micro_batches(owner)]
    reference = torch.nn.Linear(HIDDEN, VOCAB, dtype=torch.float64)
    reference.load_state_dict(model.state_dict())
    x_all = torch.cat([x for x, _ in everything])
    y_all = torch.cat([y for _, y in everything])
    full_mean = crossent.cross_entropy(reference(x_all), y_all)
    full_mean.backward()
    say(f"global count of kept targets: {int(count)}")
    say(f"sum of micro-batch losses / global count: {total.item():.12f}")
    say(f"full-batch mean:                          {full_mean.item():.12f}")
    say(f"mean of per-micro-batch means (the bug):  {wrong.item():.12f}")
    say(f"max |gradient difference| vs full batch:  {(model.weight.grad - reference.weight.grad).abs().max():.1e}")


def main() -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    group = dist.group.WORLD
    say(f"{dist.get_world_size()} ranks, {VOCAB} classes, {BATCH} positions\n")
    vocab_parallel(group)
    say("")
    gradient_accumulation(group)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
