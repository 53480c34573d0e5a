"""``crossent demo``: train a small language model twice and compare the two loss steps.

The model reads the previous few tokens and produces a hidden vector ``h`` per position; the LM head
``W`` (vocabulary × width) turns it into next-token logits. Both runs start from the same seed and
see the same batches; they differ only in the loss step:

* ``crossent.linear_cross_entropy(h, W, y)``: fused, never materialises the (tokens × vocabulary)
  logits;
* ``F.cross_entropy(h @ W.T, y)``: the naive way, kept here on purpose as the baseline.

The table reports each run's final loss, training tokens per second, and the peak memory of one loss
step (forward and backward, measured by ``_memory``); the plot shows both loss curves and their
difference, which stays at rounding level.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import TaskID
from torch import nn

from crossent.cli import _console
from crossent.cli._corpus import Corpus, default_text, read_text, tokenize
from crossent.cli._errors import CLIError
from crossent.cli._inputs import output_file, torch_device
from crossent.cli._memory import peak_bytes
from crossent.fused import linear_cross_entropy

CONTEXT = 4  # tokens the model sees before predicting the next one
EMBEDDING = 64
HIDDEN = 256
WIDTH = 128  # d: the hidden size fed to the LM head
LEARNING_RATE = 3e-3

LossStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fused_loss(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return linear_cross_entropy(h, weight, target)


def naive_loss(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(h @ weight.T, target)  # the baseline being compared against, by design


RUNS: dict[str, LossStep] = {
    "crossent.linear_cross_entropy": fused_loss,
    "torch F.cross_entropy(h @ W.T)": naive_loss,
}


class TinyLM(nn.Module):
    """A fixed-window neural language model (Bengio et al., 2003) with a separate LM head ``head``."""

    def __init__(self, vocabulary_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary_size, EMBEDDING)
        self.mix = nn.Sequential(
            nn.Linear(CONTEXT * EMBEDDING, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, WIDTH), nn.LayerNorm(WIDTH)
        )
        self.head = nn.Parameter(torch.randn(vocabulary_size, WIDTH) * WIDTH**-0.5)  # W: (V, d)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """(B, CONTEXT) token ids -> (B, WIDTH) hidden vectors h."""
        return self.mix(self.embed(context).flatten(1))


@dataclass(frozen=True)
class RunResult:
    losses: list[float]
    tokens_per_second: float
    loss_step_bytes: int


@dataclass(frozen=True, eq=False)
class Batches:
    """``steps`` batches of ``size`` random windows of the text, drawn afresh but identically on every pass."""

    windows: torch.Tensor  # (positions, CONTEXT + 1): each context and the token that follows it
    size: int
    steps: int
    seed: int
    device: torch.device

    @classmethod
    def of(cls, corpus: Corpus, size: int, steps: int, seed: int, device: torch.device) -> Batches:
        return cls(corpus.ids.unfold(0, CONTEXT + 1, 1), size, steps, seed, device)

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            rows = torch.randint(len(self.windows), (self.size,), generator=generator)
            yield self.windows[rows].to(self.device)


def _loss_step_bytes(model: TinyLM, batch: torch.Tensor, loss_step: LossStep) -> int:
    """Peak memory of one loss step, forward and backward, on detached copies (training is untouched)."""
    with torch.no_grad():
        h = model(batch[:, :CONTEXT])
    h.requires_grad_(True)
    weight = model.head.detach().clone().requires_grad_(True)
    return peak_bytes(lambda: loss_step(h, weight, batch[:, CONTEXT]).backward())


def train(
    vocabulary_size: int, batches: Batches, loss_step: LossStep, report: Callable[[int, float, float], None]
) -> RunResult:
    """Train a fresh TinyLM (seeded with ``batches.seed``); ``report(step, loss, tokens/s)`` after every step."""
    torch.manual_seed(batches.seed)
    model = TinyLM(vocabulary_size).to(batches.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    loss_step_bytes = _loss_step_bytes(model, next(iter(batches)), loss_step)
    losses: list[float] = []
    rate = 0.0
    clock = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        loss = loss_step(model(batch[:, :CONTEXT]), model.head, batch[:, CONTEXT])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # the curve is the output: one sync per step is the point
        now = time.perf_counter()
        if step == 1:  # the first step pays one-off costs (lazy imports, first allocations): not timed
            rate, clock = batch.shape[0] / (now - clock), now
        else:
            rate = (step - 1) * batch.shape[0] / (now - clock)
        report(step, losses[-1], rate)
    return RunResult(losses, rate, loss_step_bytes)


def _corpus(args: argparse.Namespace) -> Corpus:
    if args.vocab < 2:
        raise CLIError(f"--vocab must be at least 2, got {args.vocab}")
    name, text = read_text(args.text) if args.text is not None else default_text()
    return tokenize(name, text, args.vocab, min_tokens=CONTEXT + 2)


def run(args: argparse.Namespace) -> int:
    output_file(args.out, "--out", ".png")
    corpus = _corpus(args)
    device = torch_device(args.device)
    out = _console.stdout()
    vocabulary = len(corpus.vocabulary)
    logits_bytes = args.batch * vocabulary * 4
    out.print(
        f"Training a {CONTEXT}-token-context language model on {corpus.name} ({len(corpus.ids):,} tokens, "
        f"vocabulary {vocabulary:,}) for {args.steps} steps of {args.batch:,} tokens on {device}, twice. "
        f"The naive loss step builds {args.batch:,} × {vocabulary:,} logits "
        f"({_console.mebibytes(logits_bytes)} in float32).",
        markup=False,
    )
    batches = Batches.of(corpus, args.batch, args.steps, args.seed, device)
    results: dict[str, RunResult] = {}
    with _console.progress("loss", "speed") as bar:
        for name, loss_step in RUNS.items():
            task = bar.add_task(name, total=args.steps, loss="loss -", speed="- tokens/s")

            def report(step: int, loss: float, rate: float, task: TaskID = task) -> None:
                bar.update(task, completed=step, loss=f"loss {loss:.4f}", speed=f"{rate:,.0f} tokens/s")

            results[name] = train(vocabulary, batches, loss_step, report)

    rows = [
        [name, _console.number(r.losses[-1]), f"{r.tokens_per_second:,.0f}", _console.mebibytes(r.loss_step_bytes)]
        for name, r in results.items()
    ]
    title = "Results (peak memory: one loss step, forward and backward)"
    out.print(_console.table(title, ["loss step", "final loss", "tokens/s", "peak memory"], rows))
    fused, naive = (r.losses for r in results.values())
    gap = max(abs(a - b) for a, b in zip(fused, naive, strict=True))
    out.print(f"The two loss curves differ by at most {gap:.3g} over {args.steps} steps.")

    from crossent.cli._plots import loss_curves

    title = f"{corpus.name}: vocabulary {vocabulary:,}, {args.batch:,} tokens per step"
    loss_curves({name: r.losses for name, r in results.items()}, args.out, title)
    out.print(f"Plot written to {args.out}", markup=False)
    return 0
