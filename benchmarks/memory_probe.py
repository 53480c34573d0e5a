"""CPU peak memory of one implementation on one case, measured in a fresh process.

A fresh process holds nothing but the case's inputs: no other implementation's freed memory, no
earlier case's tensors. Each probe is a child forked from a fork server that has imported torch and
every implementation once, and is still single-threaded, so forking it is safe: a new process at
the cost of a fork instead of seconds of imports. The child rebuilds the case from its seed.
"""

from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from .memory import peak_rss_growth, use_fixed_mmap_threshold
from .ops import OPS
from .shapes import shape_from_dict
from .steps import MODES, Mode, Steps


@dataclass(frozen=True)
class ProbeSpec:
    """What the fresh process rebuilds: one implementation of one case, by name."""

    op: str
    shape: dict[str, object]
    dtype: str
    subject: str
    compiled: bool
    seed: int
    threads: int


def cpu_peak_growth_in_fresh_process(spec: ProbeSpec) -> dict[Mode, int]:
    """Peak RSS growth in bytes of forward+backward and of the no-grad forward, in a new process."""
    context = multiprocessing.get_context("forkserver")
    # Takes effect when the server starts, on the first probe of the run.
    context.set_forkserver_preload([__name__, f"{__package__}.probe_preload"])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_probe, spec).result()


def _probe(spec: ProbeSpec) -> dict[Mode, int]:
    use_fixed_mmap_threshold()
    torch.set_num_threads(spec.threads)
    op = OPS[spec.op]
    subject = {subject.name: subject for subject in op.subjects(spec.compiled)}[spec.subject]
    problem = op.make_problem(shape_from_dict(spec.shape), getattr(torch, spec.dtype), torch.device("cpu"), spec.seed)
    steps = Steps(subject.load(), op.call, problem, intermediate_inputs=op.intermediate_inputs)
    peaks: dict[Mode, int] = {}
    for mode in MODES:
        # The warm-up pays lazy initialisation (thread pool, code pages, compilation) so that the
        # measured call is a steady-state one; resetting then frees its gradients.
        steps.reset()
        steps.run(mode)
        steps.reset()
        peaks[mode] = peak_rss_growth(functools.partial(steps.run, mode))
    return peaks
