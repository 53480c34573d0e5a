"""Wall-clock time per call of each implementation, all of them timed in alternation in one process.

A call of tens of microseconds is too short to time alone: the clock's own cost, a timer interrupt or
one cache miss more would be a large part of it. Each timed sample is therefore a batch of calls, as
``timeit`` does, with as many calls as make the batch last at least ``min_sample_s``; a call that
lasts that long is timed alone, one call per sample. Each implementation gets its own number of
calls, so that the samples of a fast and of a slow implementation last about as long and are about
as exposed to whatever else the machine is doing.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from .steps import Mode, Steps

# Short enough to fit between two preemptions on a busy machine, long enough to dwarf the clock's cost.
DEFAULT_MIN_SAMPLE_S = 0.002
# Short calls are sampled until their samples add up to this (per implementation and mode).
DEFAULT_MIN_TIME_S = 0.25
# Each calibration batch grows the count at most this much: a first call that pays lazy initialisation
# must not make the count too small for long, nor a first call that was fast by chance too large.
_MAX_GROWTH = 100
_CALIBRATION_BATCHES = 8
# A calibration batch shorter than this many minimum samples is timed twice.
_CONFIRM_BELOW = 50


@dataclass
class Timings:
    """What :func:`time_in_alternation` measured: per implementation, milliseconds per call.

    ``medians`` and ``bests`` (the fastest sample) are per call, over ``rounds`` samples, each a
    batch of ``calls_per_sample[name]`` calls; ``spreads`` are half the interquartile range of the
    samples over their median. On a machine that other processes share, interference only ever
    adds time, so the best sample is the steadiest estimate of a short call's own cost (``timeit``'s
    advice).
    """

    medians: dict[str, float] = field(default_factory=dict)
    bests: dict[str, float] = field(default_factory=dict)
    spreads: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)
    calls_per_sample: dict[str, int] = field(default_factory=dict)
    rounds: int = 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_in_alternation(
    steps: dict[str, Steps],
    mode: Mode,
    *,
    rounds: int,
    warmup: int,
    device: torch.device,
    min_sample_s: float = DEFAULT_MIN_SAMPLE_S,
    min_time_s: float = DEFAULT_MIN_TIME_S,
) -> Timings:
    """Milliseconds per call of each implementation (median and best), and the failures of those that raised.

    Each round times every implementation once, in the order A B C, then C B A, and so on. Drift in
    the machine's state (other processes, frequency, memory fragmentation) then reaches every
    implementation alike, and none always runs right after the same neighbour. The first warm-up
    round finds each implementation's number of calls per sample (with more untimed batches if its
    calls are short); it runs even when ``warmup`` is 0. There are ``rounds`` timed rounds, or more
    when the samples are short: as many as make the longest-running implementation's samples add
    up to ``min_time_s``. A best-of is only as good as its number of tries, and short calls make
    many tries cheap.
    """
    timings = Timings()
    sample_s: dict[str, float] = {}
    for name, step in steps.items():
        try:
            timings.calls_per_sample[name], sample_s[name] = _calibrate(step, mode, device, min_sample_s)
        except Exception as exc:  # an implementation's own failure, reported in its row
            timings.failures[name] = exc
    longest = max(sample_s.values(), default=0.0)
    timings.rounds = max(rounds, math.ceil(min_time_s / longest)) if longest > 0 else rounds
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(max(warmup - 1, 0) + timings.rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for name in order:
            if name in timings.failures:
                continue
            calls = timings.calls_per_sample[name]
            try:
                seconds = time_batch(steps[name], mode, device, calls)
            except Exception as exc:
                timings.failures[name] = exc
                continue
            if round_index >= warmup - 1:
                samples[name].append(seconds / calls)
    for name, times in samples.items():
        if name in timings.failures or not times:
            continue
        median = statistics.median(times)
        timings.medians[name] = median * 1e3
        timings.bests[name] = min(times) * 1e3
        timings.spreads[name] = _half_interquartile_range(times) / median if median > 0 else 0.0
    return timings


def time_batch(steps: Steps, mode: Mode, device: torch.device, calls: int) -> float:
    """Seconds taken by ``calls`` consecutive calls.

    Their inputs are made before the clock starts (fresh copies where the op needs them). Each call
    starts by dropping the previous call's gradients, as ``zero_grad(set_to_none=True)`` does in a
    training loop; with one call per sample that happens before the clock starts. Freeing the last
    call's result happens after it stops.
    """
    inputs = steps.fresh_inputs(calls)
    steps.start(inputs[0])
    synchronize(device)
    # As timeit does: a collection triggered by some earlier allocation must not land in this batch.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        output = steps.run(mode)
        for next_inputs in inputs[1:]:
            steps.start(next_inputs)
            output = steps.run(mode)
        synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    del output, inputs  # freeing the result is the caller's cost, not the op's: after the clock stops
    return seconds


def _calibrate(steps: Steps, mode: Mode, device: torch.device, min_sample_s: float) -> tuple[int, float]:
    """Calls per sample, enough for a batch to last ``min_sample_s``, and the seconds such a batch takes.

    The batches run here are a warm-up.
    """
    calls = 1
    for _ in range(_CALIBRATION_BATCHES):
        seconds = time_batch(steps, mode, device, calls)
        if min_sample_s <= seconds < _CONFIRM_BELOW * min_sample_s:
            # One preemption, or a first call's lazy initialisation, must not fix the count too low
            # for the whole run: a short batch has to reach the threshold twice.
            seconds = min(seconds, time_batch(steps, mode, device, calls))
        if seconds >= min_sample_s:
            break
        # 10% above the estimate, so that a batch lands above the threshold rather than just below it.
        estimate = math.ceil(1.1 * calls * min_sample_s / max(seconds, 1e-9))
        more = max(calls + 1, min(estimate, calls * _MAX_GROWTH))
        seconds, calls = seconds * more / calls, more
    return calls, seconds


def _half_interquartile_range(samples: list[float]) -> float:
    if len(samples) < 2:
        return 0.0
    quartiles = statistics.quantiles(samples, n=4, method="inclusive")
    return (quartiles[2] - quartiles[0]) / 2
