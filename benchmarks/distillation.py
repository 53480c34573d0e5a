"""``python -m benchmarks.distillation``: the fused distillation loss against the naive pair of matmuls.

The naive loss is ``F.kl_div(log_softmax(h_s @ W_s.T), log_softmax(h_t @ W_t.T), log_target=True,
reduction='batchmean')``: both models' ``(N, V)`` logits, their log-softmaxes and the gradient exist
at once. The fused loss is ``crossent.linear_distillation`` with its defaults (``divergence='kl'``,
``reduction='mean'``, the same number). The student's hidden states and classifier require grad, the
teacher's do not, as in distillation.

Time is forward + backward, both implementations timed in alternation in one process
(``benchmarks.timing``); peak memory is the RSS growth of one forward + backward in a fresh process
(``benchmarks.memory``), after a warm-up call there.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import crossent

from .environment import collect_environment
from .memory import peak_rss_growth, use_fixed_mmap_threshold
from .problems import Problem
from .steps import Steps
from .timing import time_in_alternation


def naive_distillation(hs: torch.Tensor, ws: torch.Tensor, ht: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """Both models' logits in full, and torch's KL divergence of their log-softmaxes."""
    log_q = F.linear(hs, ws).log_softmax(-1)
    log_p = F.linear(ht, wt).log_softmax(-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def implementations(chunk_size: int | None) -> dict[str, Callable[..., torch.Tensor]]:
    """The naive loss, crossent's with its default chunks, and with ``chunk_size`` rows when given."""
    found: dict[str, Callable[..., torch.Tensor]] = {
        "naive": naive_distillation,
        "crossent": crossent.linear_distillation,
    }
    if chunk_size is not None:
        found[f"crossent chunk_size={chunk_size}"] = functools.partial(
            crossent.linear_distillation, chunk_size=chunk_size
        )
    return found


def _call(function: Callable[..., torch.Tensor], p: Problem) -> torch.Tensor:
    return function(p["student_input"], p["student_weight"], p["teacher_input"], p["teacher_weight"])


@dataclass(frozen=True)
class Case:
    tokens: int
    hidden: int
    vocab: int
    dtype: str
    seed: int = 0

    def problem(self) -> Problem:
        """Hidden states and classifiers scaled so that both models' logits are standard normal."""
        generator = torch.Generator().manual_seed(self.seed)
        dtype = getattr(torch, self.dtype)
        n, h, v = self.tokens, self.hidden, self.vocab

        def draw(*shape: int, scale: float = 1.0, grad: bool = False) -> torch.Tensor:
            return (torch.randn(*shape, generator=generator) * scale).to(dtype).requires_grad_(grad)

        tensors = {
            "student_input": draw(n, h, grad=True),
            "student_weight": draw(v, h, scale=1 / math.sqrt(h), grad=True),
            "teacher_input": draw(n, h),
            "teacher_weight": draw(v, h, scale=1 / math.sqrt(h)),
        }
        return Problem(tensors, ("student_input", "student_weight"))


def peak_memory(case: Case, name: str, chunk_size: int | None, threads: int) -> int:
    """Peak RSS growth in bytes of one forward + backward of implementation ``name``, in a fresh process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_probe, case, name, chunk_size, threads).result()


def _probe(case: Case, name: str, chunk_size: int | None, threads: int) -> int:
    use_fixed_mmap_threshold()
    torch.set_num_threads(threads)
    steps = Steps(implementations(chunk_size)[name], _call, case.problem(), intermediate_inputs=False)
    steps.reset()
    steps.run("full")  # the warm-up pays lazy initialisation; resetting frees its gradients
    steps.reset()
    return peak_rss_growth(functools.partial(steps.run, "full"))


def relative_errors(case: Case, functions: dict[str, Callable[..., torch.Tensor]]) -> dict[str, float]:
    """Each implementation's |loss - truth| / |truth|, the truth being the float64 loss of the same inputs."""
    p = case.problem()
    truth_inputs = Problem({name: t.detach().double() for name, t in p.tensors.items()}, ())
    with torch.no_grad():
        truth = _call(naive_distillation, truth_inputs)
        return {name: float((_call(f, p).double() - truth).abs() / truth) for name, f in functions.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distillation", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=5, help="timed samples per implementation (default: 5)")
    parser.add_argument("--chunk-size", type=int, help="also time crossent with chunks of this many rows")
    args = parser.parse_args(argv)
    environment = collect_environment("cpu")
    functions = implementations(args.chunk_size)
    print(
        f"N={args.tokens} H={args.hidden} V={args.vocab}, forward + backward, on {environment.machine} "
        f"({environment.cores} cores, {environment.threads} threads), torch {environment.torch}, "
        f"load average at the start: {environment.load}"
    )
    print("| dtype | implementation | time: median (best) | extra peak memory | loss error vs float64 |")
    print("|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        case = Case(args.tokens, args.hidden, args.vocab, dtype)
        problem = case.problem()
        steps = {name: Steps(f, _call, problem, intermediate_inputs=False) for name, f in functions.items()}
        timings = time_in_alternation(
            steps, "full", rounds=args.rounds, warmup=1, device=torch.device("cpu"), min_time_s=0
        )
        for name, exc in timings.failures.items():
            raise RuntimeError(f"{name} failed") from exc
        del steps, problem
        errors = relative_errors(case, functions)
        for name in functions:
            peak = peak_memory(case, name, args.chunk_size, environment.threads)
            print(
                f"| {dtype} | {name} | {timings.medians[name] / 1e3:.2f} s ({timings.bests[name] / 1e3:.2f} s) "
                f"| {peak / 2**20:.0f} MiB | {errors[name]:.1e} |",
                flush=True,
            )
    print(f"(time: {args.rounds} alternating forward + backward calls; memory: RSS growth in a fresh process)")


if __name__ == "__main__":
    main()
