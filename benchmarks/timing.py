"""Median wall-clock time of each implementation, all of them timed in alternation in one process."""

from __future__ import annotations

import gc
import statistics
import time

import torch

from .steps import Mode, Steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_in_alternation(
    steps: dict[str, Steps], mode: Mode, *, rounds: int, warmup: int, device: torch.device
) -> tuple[dict[str, float], dict[str, Exception]]:
    """Median milliseconds per call of each implementation, and the failures of those that raised.

    Each round calls every implementation once, in the order A B C, then C B A, and so on. Drift in
    the machine's state (other processes, frequency, memory fragmentation) then reaches every
    implementation alike, and none always runs right after the same neighbour. The first ``warmup``
    rounds are not recorded.
    """
    samples: dict[str, list[float]] = {name: [] for name in steps}
    failures: dict[str, Exception] = {}
    for round_index in range(warmup + rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for name in order:
            if name in failures:
                continue
            try:
                seconds = _time_one_call(steps[name], mode, device)
            except Exception as exc:  # an implementation's own failure, reported in its row
                failures[name] = exc
                continue
            if round_index >= warmup:
                samples[name].append(seconds)
    medians = {name: statistics.median(times) * 1e3 for name, times in samples.items() if name not in failures}
    return medians, failures


def _time_one_call(steps: Steps, mode: Mode, device: torch.device) -> float:
    steps.reset()
    synchronize(device)
    # As timeit does: a collection triggered by some earlier allocation must not land in this call.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        output = steps.run(mode)
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    del output  # freeing the result is the caller's cost, not the op's: after the clock stops
    return seconds
