"""The benchmark run: every selected op on every shape and dtype, torch and crossent side by side."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .accuracy import ground_truth, max_abs_errors
from .memory import cuda_peak_growth
from .memory_probe import ProbeSpec, cpu_peak_growth_in_fresh_process
from .ops import Op, Unavailable, ops_named
from .shapes import DEFAULT_SHAPE_SETS, Shape, shape_to_dict, shapes_of
from .steps import MODES, Mode, Steps
from .timing import DEFAULT_MIN_SAMPLE_S, DEFAULT_MIN_TIME_S, time_in_alternation

DEFAULT_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
MIB = 2**20

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Row:
    """One implementation on one case (op, shape, dtype).

    Times are medians in milliseconds per call of forward+backward (``full``) and of the no-grad
    forward; ``full_best_ms`` and ``forward_best_ms`` are the fastest sample's. A timed sample is a
    batch of ``full_batch`` / ``forward_batch`` consecutive calls (1 when one call lasts
    ``min_sample_s``), and ``rounds`` is the number of forward+backward samples. A spread is half the
    interquartile range of the samples over their median: 0.02 means the middle half of them lie
    within about ±2%.
    A speedup is the reference's median divided by this implementation's: above 1 is faster than
    torch. Peaks are the extra memory in MiB above the inputs at the height of one call. Errors are
    the largest absolute differences from the float64 ground truth, of the value and of every
    gradient. ``status`` is "ok", "not available: <why>" or "error (<stage>): <exception>"; what could
    not be measured is None.
    """

    op: str
    shape: str
    dtype: str
    device: str
    impl: str
    status: str
    full_ms: float | None = None
    full_speedup: float | None = None
    forward_ms: float | None = None
    forward_speedup: float | None = None
    full_peak_mib: float | None = None
    forward_peak_mib: float | None = None
    value_error: float | None = None
    grad_error: float | None = None
    rounds: int = 0
    full_batch: int = 0
    forward_batch: int = 0
    full_spread: float | None = None
    forward_spread: float | None = None
    full_best_ms: float | None = None
    forward_best_ms: float | None = None


@dataclass(frozen=True)
class Case:
    op: Op
    shape: Shape
    dtype: torch.dtype

    @property
    def label(self) -> str:
        return f"{self.op.name} {self.shape.label} {_dtype_name(self.dtype)}"


@dataclass(frozen=True)
class Settings:
    device: torch.device
    rounds: int
    warmup: int
    compiled: bool
    memory: bool
    seed: int
    min_sample_s: float = DEFAULT_MIN_SAMPLE_S
    min_time_s: float = DEFAULT_MIN_TIME_S


def plan(
    ops: Sequence[str] | None = None,
    shape_sets: Sequence[str] = DEFAULT_SHAPE_SETS,
    dtypes: Sequence[str | torch.dtype] = DEFAULT_DTYPES,
) -> list[Case]:
    """The cases of a run, grouped by shape: each op on the shapes of its kind, in every dtype."""
    selected = ops_named(tuple(ops) if ops is not None else None)
    shapes = shapes_of(shape_sets)
    resolved = [_resolve_dtype(dtype) for dtype in dtypes]
    cases = [
        Case(op, shape, dtype)
        for shape in shapes
        for op in selected
        if isinstance(shape, op.shape_type)
        for dtype in resolved
    ]
    if not cases:
        raise ValueError(
            f"no selected op takes the shapes of {', '.join(shape_sets)}: linear_cross_entropy takes "
            "the lce sets, every other op the logits sets"
        )
    return cases


def run(
    ops: Sequence[str] | None = None,
    shape_sets: Sequence[str] = DEFAULT_SHAPE_SETS,
    dtypes: Sequence[str | torch.dtype] = DEFAULT_DTYPES,
    *,
    device: str | torch.device = "cpu",
    rounds: int = 10,
    warmup: int = 1,
    compiled: bool = False,
    memory: bool = True,
    seed: int = 0,
    min_sample_s: float = DEFAULT_MIN_SAMPLE_S,
    min_time_s: float = DEFAULT_MIN_TIME_S,
    progress: Progress | None = None,
) -> list[Row]:
    """Benchmark ``ops`` (names from ``benchmarks.OPS``, all by default) on the named shape sets.

    For each case, every implementation is first checked against the float64 ground truth, then
    timed in alternation with the others, for forward+backward and for the no-grad forward: after
    ``warmup`` untimed rounds, ``rounds`` timed ones, or as many more as make the samples of each
    implementation add up to ``min_time_s``. A timed sample is a batch of as many calls as last
    ``min_sample_s`` (one call when a call lasts that long); the first warm-up round, run even when
    ``warmup`` is 0, finds that number for each implementation. See :mod:`benchmarks.timing`. With
    ``memory``, its peak extra memory is measured (on CPU in a fresh process per implementation).
    ``compiled`` adds torch.compile'd torch as a baseline. ``progress(index, total, label)`` is called
    before each case. An implementation that does not exist yet, or fails, gets a row that says so;
    the run goes on.
    """
    if rounds < 1 or warmup < 0 or not min_sample_s >= 0 or not min_time_s >= 0:
        raise ValueError(
            f"need rounds >= 1, warmup >= 0, min_sample_s >= 0 and min_time_s >= 0, got rounds={rounds}, "
            f"warmup={warmup}, min_sample_s={min_sample_s}, min_time_s={min_time_s}"
        )
    settings = Settings(_resolve_device(device), rounds, warmup, compiled, memory, seed, min_sample_s, min_time_s)
    cases = plan(ops, shape_sets, dtypes)
    rows: list[Row] = []
    for index, case in enumerate(cases):
        if progress is not None:
            progress(index, len(cases), case.label)
        rows += run_case(case, settings)
    return rows


@dataclass
class _Outcome:
    """What the run learnt about one implementation on one case, stage by stage."""

    status: str = "ok"
    errors: tuple[float, float] | None = None
    median_ms: dict[Mode, float] = field(default_factory=dict)
    best_ms: dict[Mode, float] = field(default_factory=dict)
    spread: dict[Mode, float] = field(default_factory=dict)
    batch: dict[Mode, int] = field(default_factory=dict)
    rounds: dict[Mode, int] = field(default_factory=dict)
    peak_mib: dict[Mode, float] = field(default_factory=dict)


def run_case(case: Case, settings: Settings) -> list[Row]:
    op = case.op
    if settings.compiled:
        torch._dynamo.reset()  # each case compiles afresh, far from the recompilation limit
    problem = op.make_problem(case.shape, case.dtype, settings.device, settings.seed)
    subjects = op.subjects(settings.compiled)
    outcomes = {subject.name: _Outcome() for subject in subjects}
    steps: dict[str, Steps] = {}
    for subject in subjects:
        try:
            function = subject.load()
        except Unavailable as exc:
            outcomes[subject.name].status = f"not available: {exc}"
            continue
        except Exception as exc:
            outcomes[subject.name].status = _error("load", exc)
            continue
        steps[subject.name] = Steps(function, op.call, problem, intermediate_inputs=op.intermediate_inputs)

    def fail(name: str, stage: str, exc: Exception) -> None:
        outcomes[name].status = _error(stage, exc)
        del steps[name]

    truth = ground_truth(op.reference.load(), op.call, problem)
    for name in list(steps):
        try:
            outcomes[name].errors = max_abs_errors(steps[name], truth)
        except Exception as exc:
            fail(name, "check", exc)
    del truth

    for mode in MODES:
        timings = time_in_alternation(
            steps,
            mode,
            rounds=settings.rounds,
            warmup=settings.warmup,
            device=settings.device,
            min_sample_s=settings.min_sample_s,
            min_time_s=settings.min_time_s,
        )
        for name, median in timings.medians.items():
            outcomes[name].median_ms[mode] = median
            outcomes[name].best_ms[mode] = timings.bests[name]
            outcomes[name].spread[mode] = timings.spreads[name]
            outcomes[name].batch[mode] = timings.calls_per_sample[name]
            outcomes[name].rounds[mode] = timings.rounds
        for name, failure in timings.failures.items():
            fail(name, mode, failure)

    if settings.memory:
        for name in list(steps):
            try:
                for mode, peak_bytes in _peak_bytes(case, name, steps[name], settings).items():
                    outcomes[name].peak_mib[mode] = peak_bytes / MIB
            except Exception as exc:
                fail(name, "memory", exc)

    reference = outcomes[op.reference.name].median_ms
    return [_row(case, settings, name, outcome, reference) for name, outcome in outcomes.items()]


def _row(case: Case, settings: Settings, impl: str, outcome: _Outcome, reference_ms: dict[Mode, float]) -> Row:
    def speedup(mode: Mode) -> float | None:
        if mode not in reference_ms or mode not in outcome.median_ms:
            return None
        return reference_ms[mode] / outcome.median_ms[mode]

    return Row(
        op=case.op.name,
        shape=case.shape.label,
        dtype=_dtype_name(case.dtype),
        device=str(settings.device),
        impl=impl,
        status=outcome.status,
        full_ms=outcome.median_ms.get("full"),
        full_speedup=speedup("full"),
        forward_ms=outcome.median_ms.get("forward"),
        forward_speedup=speedup("forward"),
        full_peak_mib=outcome.peak_mib.get("full"),
        forward_peak_mib=outcome.peak_mib.get("forward"),
        value_error=outcome.errors[0] if outcome.errors is not None else None,
        grad_error=outcome.errors[1] if outcome.errors is not None else None,
        rounds=outcome.rounds.get("full", 0),
        full_batch=outcome.batch.get("full", 0),
        forward_batch=outcome.batch.get("forward", 0),
        full_spread=outcome.spread.get("full"),
        forward_spread=outcome.spread.get("forward"),
        full_best_ms=outcome.best_ms.get("full"),
        forward_best_ms=outcome.best_ms.get("forward"),
    )


def _peak_bytes(case: Case, name: str, steps: Steps, settings: Settings) -> dict[Mode, int]:
    if settings.device.type == "cuda":
        # The caching allocator counts exactly what is allocated, so the run's own process will do;
        # the timing rounds were the warm-up.
        peaks: dict[Mode, int] = {}
        for mode in MODES:
            steps.reset()
            peaks[mode] = cuda_peak_growth(functools.partial(steps.run, mode), settings.device)
        return peaks
    spec = ProbeSpec(
        op=case.op.name,
        shape=shape_to_dict(case.shape),
        dtype=_dtype_name(case.dtype),
        subject=name,
        compiled=settings.compiled,
        seed=settings.seed,
        threads=torch.get_num_threads(),
    )
    return cpu_peak_growth_in_fresh_process(spec)


def _error(stage: str, exc: Exception) -> str:
    message = (str(exc).strip().splitlines() or [""])[0]
    if len(message) > 200:
        message = message[:197] + "..."
    return f"error ({stage}): {type(exc).__name__}: {message}"


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must name a floating-point torch dtype such as float32, got {dtype!r}")
    return resolved


def _resolve_device(device: str | torch.device) -> torch.device:
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {resolved.type!r}")
    return resolved


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
