"""Shared machinery of the Triton kernels: tuning, launch bookkeeping and small device helpers.

Block sizes come from fixed heuristics (no autotuning); the reasoning is next to each number.
Under ``TRITON_INTERPRET=1`` every program runs as NumPy on the CPU, so the interpreter gets
tiny blocks: tests then reach the multi-block and split-row code paths at small, odd shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from crossent._engine import ClassIndex

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Block-size policy of the row kernels.

    Attributes:
        fused_max_cols: widest row that one program keeps in registers; such rows are read once
            and their gradient written once (1 read + 1 write).
        stream_block: columns per loop iteration for wider rows, which take a second read.
        elementwise_block: elements per program of the element-wise kernels.
        min_programs: wide rows are split into vocabulary segments (two-stage reduction) until
            the grid has at least this many programs, so few-row calls still fill the GPU.
    """

    fused_max_cols: int
    stream_block: int
    elementwise_block: int
    min_programs: int


def interpreting() -> bool:
    """True when Triton runs kernels through its NumPy interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def gpu_tuning(sms: int) -> Tuning:
    """The tuning of a GPU with ``sms`` streaming multiprocessors."""
    # A 16384-column row across 32 warps is 16 fp32 values a thread: the single-block kernels
    # compile for sm_90 in at most 64 registers without spills (python -m crossent.triton.aot);
    # at 32768 columns they spill 96-624 bytes a thread. Four programs per SM hide the latency
    # of the split-row partial reductions.
    return Tuning(fused_max_cols=16384, stream_block=4096, elementwise_block=2048, min_programs=4 * sms)


@functools.lru_cache(maxsize=8)
def _gpu_tuning(device_index: int) -> Tuning:
    return gpu_tuning(torch.cuda.get_device_properties(device_index).multi_processor_count)


# Tiny blocks for the interpreter: each program costs Python time per block, not per element.
_INTERPRET_TUNING = Tuning(fused_max_cols=64, stream_block=16, elementwise_block=64, min_programs=1)
_override: list[Tuning] = []


def tuning(device: torch.device) -> Tuning:
    """The tuning in force for kernels on ``device``."""
    if _override:
        return _override[-1]
    if device.type == "cuda" and not interpreting():
        return _gpu_tuning(device.index if device.index is not None else torch.cuda.current_device())
    return _INTERPRET_TUNING


@contextlib.contextmanager
def use_tuning(**changes: int) -> Iterator[Tuning]:
    """Temporarily replace fields of the tuning (tests force the multi-block and split paths)."""
    base = _override[-1] if _override else _INTERPRET_TUNING
    new = dataclasses.replace(base, **changes)
    _override.append(new)
    try:
        yield new
    finally:
        _override.pop()


def num_warps_for(block: int) -> int:
    """Warps for a program that holds ``block`` values: about 8 fp32 values a thread up to 32 warps."""
    return max(4, min(32, triton.next_power_of_2(block) // 256))


def total_target_weight(target: Tensor, weight: Tensor | None, ignore_index: int, acc: torch.dtype) -> Tensor:
    """W = sum_n w_{y_n} [y_n != ignore_index] as a 0-d tensor, reduced on the device (no host sync):
    the engine's own ``'mean'`` divisor."""
    c = weight.shape[0] if weight is not None else 1
    return ClassIndex.build(target.reshape(1, -1), weight, ignore_index, 0.0, c, acc).mean_divisor()


def tl_dtype(dtype: torch.dtype) -> tl.dtype:
    """The Triton dtype of an accumulation dtype (passed to kernels as the ``ACC`` constexpr)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


@dataclasses.dataclass(frozen=True)
class RowSplit:
    """How a row of ``cols`` values is cut: one block, a loop of blocks, or segments of a loop."""

    block: int
    single_block: bool
    segments: int
    segment_len: int


def split_rows(rows: int, cols: int, tune: Tuning, values_per_col: int = 1) -> RowSplit:
    """Choose the row layout: fused single block when it fits, else streamed, split when rows are few.

    ``values_per_col`` is how many values a column keeps on chip (2 for probability targets, and for
    label smoothing with class weights: the logit and the target coefficient), which divides the
    widest row that fits.
    """
    if cols <= tune.fused_max_cols // values_per_col:
        return RowSplit(max(triton.next_power_of_2(max(cols, 1)), 16), True, 1, cols)
    block = tune.stream_block
    blocks = triton.cdiv(cols, block)
    segments = max(1, min(blocks, triton.cdiv(tune.min_programs, max(rows, 1))))
    segment_len = triton.cdiv(blocks, segments) * block
    return RowSplit(block, False, triton.cdiv(cols, segment_len), segment_len)


# Launch hooks: tests record every (kernel, grid, arguments) to compile the same specialisations
# ahead of time for sm_90 without a GPU; a dry run records without executing.
_launch_hooks: list[Callable[[Any, tuple[int, ...], dict[str, Any]], None]] = []
_dry_run: list[bool] = []


def launch(kernel: Any, grid: tuple[int, ...], **kwargs: Any) -> None:
    """Launch ``kernel`` on ``grid`` (skipped when the grid is empty) and tell the launch hooks."""
    for hook in _launch_hooks:
        hook(kernel, grid, kwargs)
    if not all(g > 0 for g in grid) or _dry_run:
        return
    if interpreting():
        # The interpreter evaluates kernels with NumPy, which warns where a GPU silently
        # produces inf/NaN (exp overflow, inf - inf); those values are intended here.
        with np.errstate(all="ignore"):
            kernel[grid](**kwargs)
    else:
        kernel[grid](**kwargs)


@contextlib.contextmanager
def record_launches(execute: bool = True) -> Iterator[list[tuple[Any, tuple[int, ...], dict[str, Any]]]]:
    """Collect every kernel launch made inside the block; ``execute=False`` only records them."""
    seen: list[tuple[Any, tuple[int, ...], dict[str, Any]]] = []

    def hook(kernel: Any, grid: tuple[int, ...], kwargs: dict[str, Any]) -> None:
        seen.append((kernel, grid, dict(kwargs)))

    _launch_hooks.append(hook)
    if not execute:
        _dry_run.append(True)
    try:
        yield seen
    finally:
        _launch_hooks.remove(hook)
        if not execute:
            _dry_run.pop()


def is_tracing(*tensors: Tensor) -> bool:
    """True under torch.compile / export / fake-tensor tracing: in-place fast paths give way to pure ones.

    A traced graph runs its backward from saved tensors only, with no Python state between calls.
    """
    from torch._subclasses.fake_tensor import is_fake

    return torch.compiler.is_compiling() or any(is_fake(t) for t in tensors)


# ---------------------------------------------------------------------------------------------
# Device helpers shared by the kernels.
# ---------------------------------------------------------------------------------------------


@triton.jit
def finite_ref(m):
    """Reference point for exp and differences: the running max, or 0 while all seen values are -inf.

    Subtracting a -inf max would turn exp(-inf - -inf) into NaN for rows that only start with -inf.
    """
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def log1p(u):
    """log(1 + u), accurate for tiny u (Goldberg: log(v) * u / (v - 1) with v = 1 + u rounded)."""
    v = 1.0 + u
    return tl.where(v == 1.0, u, tl.log(v) * (u / (v - 1.0)))


@triton.jit
def log_sigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), finite for every finite x."""
    return tl.minimum(x, 0.0) - log1p(tl.exp(-tl.abs(x)))


@triton.jit
def block_stats(x, a, mask, NEED_A: tl.constexpr):
    """Statistics of one block of a row, relative to r = finite_ref(max).

    Returns (m, s, A, B) with m = max x, s = sum exp(x - r), A = sum a (x - r), B = sum a.
    Masked lanes must hold x = -inf and a = 0.
    """
    m = tl.max(x, 0)
    r = tl.where(m == float("-inf"), 0.0, m)  # finite_ref, inlined
    s = tl.sum(tl.exp(x - r), 0)
    if NEED_A:
        A = tl.sum(tl.where(mask, a * (x - r), 0.0), 0)
        B = tl.sum(a, 0)
    else:
        A = tl.zeros_like(s)
        B = tl.zeros_like(s)
    return m, s, A, B


@triton.jit
def merge_stats(m1, s1, A1, B1, m2, s2, A2, B2):
    """Online log-sum-exp: merge two (m, s, A, B) summaries into one relative to the new max.

    s is rescaled by exp(r_old - r_new); A = sum a (x - r) moves by B (r_old - r_new).
    A summary of only -inf values has s = 0 and must not be rescaled (exp could overflow).
    """
    m = tl.maximum(m1, m2)
    # finite_ref of m, m1 and m2, inlined (nested jit calls are costly in the interpreter).
    r = tl.where(m == float("-inf"), 0.0, m)
    r1 = tl.where(m1 == float("-inf"), 0.0, m1)
    r2 = tl.where(m2 == float("-inf"), 0.0, m2)
    s = tl.where(m1 == float("-inf"), 0.0, s1 * tl.exp(r1 - r)) + tl.where(
        m2 == float("-inf"), 0.0, s2 * tl.exp(r2 - r)
    )
    A = A1 + B1 * (r1 - r) + A2 + B2 * (r2 - r)
    return m, s, A, B1 + B2
