"""``python -m benchmarks.transformers_training``: training a small Llama with transformers' loss and crossent's.

Three models with the same random weights: the stock one (transformers' ``ForCausalLMLoss``), one
patched by ``crossent.transformers.patch`` (the plain loss) and one patched with ``fused=True``. Each
trains for a few steps (forward, backward, an SGD step) on the same random tokens. Throughput is
tokens per second of the median (and the best) timed step, the three models' steps taken in
alternation after one warm-up step each; peak memory is the tensor storage one
training step allocates beyond the model and its inputs (``crossent.cli._memory.peak_bytes``, which
counts storages, so it is exact on CPU and independent of the allocator).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence

import torch

from crossent.cli._memory import peak_bytes

from .environment import collect_environment

LOSSES = ("transformers", "crossent", "crossent fused")


def build(loss: str, vocab: int, hidden: int, layers: int, dtype: torch.dtype) -> torch.nn.Module:
    """A Llama with random weights (seed 0) and ``loss``."""
    import transformers

    import crossent.transformers

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(dtype).train()
    if loss != "transformers":
        crossent.transformers.patch(model, fused=loss == "crossent fused")
    return model


def training_step(model: torch.nn.Module, ids: torch.Tensor, lr: float = 1e-3) -> float:
    """Forward, backward and an SGD step; the loss."""
    model.zero_grad(set_to_none=True)
    loss = model(ids, labels=ids).loss
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-lr)
    return float(loss.detach())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transformers_training", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per loss (default: 5)")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    environment = collect_environment("cpu")
    dtype = getattr(torch, args.dtype)
    ids = torch.randint(0, args.vocab, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
    logits_mib = args.batch * args.length * args.vocab * dtype.itemsize / 2**20
    print(
        f"Llama V={args.vocab} H={args.hidden} layers={args.layers}, batch {args.batch} x {args.length} tokens, "
        f"{args.dtype} (logits: {logits_mib:.0f} MiB), on {environment.machine} ({environment.cores} cores, "
        f"{environment.threads} threads), torch {environment.torch}, transformers {transformers.__version__}, "
        f"load average at the start: {environment.load}"
    )
    models = {loss: build(loss, args.vocab, args.hidden, args.layers, dtype) for loss in LOSSES}
    first = {loss: training_step(model, ids) for loss, model in models.items()}  # the warm-up step
    seconds: dict[str, list[float]] = {loss: [] for loss in LOSSES}
    for _ in range(args.steps):  # in alternation, so that a change in the machine's load hits all alike
        for loss, model in models.items():
            start = time.perf_counter()
            training_step(model, ids)
            seconds[loss].append(time.perf_counter() - start)
    print("| loss | tokens/s: median (best) | extra peak memory of a step | loss of the first step |")
    print("|---|---|---|---|")
    for loss, model in models.items():
        peak = peak_bytes(lambda model=model: training_step(model, ids))
        median, best = statistics.median(seconds[loss]), min(seconds[loss])
        print(
            f"| {loss} | {ids.numel() / median:,.0f} ({ids.numel() / best:,.0f}) | {peak / 2**20:.0f} MiB "
            f"| {first[loss]:.6f} |",
            flush=True,
        )
    print(f"({args.steps} timed steps per loss, in alternation, after one warm-up step each)")


if __name__ == "__main__":
    main()
