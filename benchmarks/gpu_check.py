"""``python -m benchmarks.gpu_check`` (``make gpu-check``): validate crossent's Triton path on a CUDA GPU.

One command, meant to finish within 8 minutes on one GPU:

1. Installs Liger-Kernel (``liger-kernel``) and Cut Cross-Entropy (``cut-cross-entropy``) from PyPI
   when they do not import (``pip install --no-deps``: the installed torch and Triton stay as they
   are). This happens only on a machine with a CUDA GPU.
2. Runs the Triton test suite (``tests/crossent_triton`` and the fused loss's CUDA memory check)
   compiled on the GPU, not interpreted.
3. Benchmarks, in one process and with the harness of ``python -m benchmarks`` (float64 ground truth,
   alternating timings, the caching allocator's peak), crossent against torch eager,
   ``torch.compile``, Liger-Kernel and Cut Cross-Entropy where they import, in bfloat16:
   ``cross_entropy`` forward+backward and no-grad forward at 16384 x 128256 and 16384 x 32768, and
   ``linear_cross_entropy`` at M = 8192, H = 4096, V = 128256 and V = 32768. Each row has its time,
   its peak memory and its time over the memory floor: one read plus one write of the case's
   logits, measured by copying a tensor of the logits' size on the same GPU.
4. Writes ``benchmarks/results/gpu-check-<UTC timestamp>.csv`` and a ``.png`` plot beside it.

Cases that would start after ``--budget-s`` seconds are listed as skipped. The exit status is the
test suite's (0 when it passed). Without a CUDA GPU it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .environment import Environment, collect_environment
from .ops import OPS, Loss, Op, Subject, Unavailable
from .paths import RESULTS_DIR, ROOT
from .report import environment_line, write_csv
from .runner import Case, Row, Settings, run_case
from .shapes import LinearShape, LogitsShape, Shape

NO_GPU = "gpu-check: no CUDA GPU here (torch sees none); nothing to check, GPU figures not measured."
PEERS = {"liger_kernel": "liger-kernel", "cut_cross_entropy": "cut-cross-entropy"}
TESTS = ("tests/crossent_triton", "tests/fused/test_memory.py::test_cuda_peak_allocated")
DTYPE = torch.bfloat16
# the headline vocabulary first, so that a run cut short by the budget still has it
SHAPES: tuple[Shape, ...] = (
    LogitsShape(16384, 128256),
    LinearShape(8192, 4096, 128256, 0.0),
    LogitsShape(16384, 32768),
    LinearShape(8192, 4096, 32768, 0.0),
)


@dataclass(frozen=True)
class Measured:
    """A harness row and the memory floor of its case (a copy of the logits: one read and one write)."""

    row: Row
    floor_ms: float | None

    def floor_ratio(self, ms: float | None) -> float | None:
        """``ms`` over the floor: 1 would move the logits' bytes as fast as a copy does."""
        return None if ms is None or not self.floor_ms else ms / self.floor_ms


def _peer(module: str, attribute: str, wrap: Callable[[object], Loss]) -> Subject:
    """A peer library's loss, as the harness calls it; unavailable when the library does not import."""

    def load() -> Loss:
        try:
            found = getattr(importlib.import_module(module), attribute)
        except ImportError as exc:
            raise Unavailable(f"{module} does not import ({exc})") from exc
        return wrap(found)

    return Subject(module.split(".")[0].replace("_", "-"), load)


def _liger_fused(loss_class: object) -> Loss:
    loss = loss_class()  # type: ignore[operator]
    return lambda input, linear_weight, target: loss(linear_weight, input, target)


def gpu_ops() -> dict[type, Op]:
    """The harness's ops with the GPU peers as baselines, keyed by the shape type they take.

    Liger-Kernel's cross-entropy writes its gradient into the logits, so every implementation of that
    case gets a fresh copy of them before each call, outside the timing (``intermediate_inputs``).
    """
    ce, lce = OPS["cross_entropy"], OPS["linear_cross_entropy"]
    liger_ce = _peer("liger_kernel.transformers.cross_entropy", "LigerCrossEntropyLoss", lambda cls: cls())  # type: ignore[operator]
    liger_lce = _peer(
        "liger_kernel.transformers.fused_linear_cross_entropy", "LigerFusedLinearCrossEntropyLoss", _liger_fused
    )
    cce = _peer("cut_cross_entropy", "linear_cross_entropy", lambda fn: fn)  # type: ignore[arg-type,return-value]
    return {
        LogitsShape: dataclasses.replace(ce, baselines=(*ce.baselines, liger_ce), intermediate_inputs=True),
        LinearShape: dataclasses.replace(lce, baselines=(lce.baselines[0], liger_lce, cce)),
    }


def logits_bytes(shape: Shape, dtype: torch.dtype = DTYPE) -> int:
    """Bytes of the case's logits: ``rows x classes``, or ``tokens x vocab`` for the fused loss."""
    if isinstance(shape, LogitsShape):
        return shape.rows * shape.classes * dtype.itemsize
    return shape.tokens * shape.vocab * dtype.itemsize


def copy_floor_ms(nbytes: int) -> float:
    """Milliseconds of one read and one write of ``nbytes``: a device-to-device copy of that size."""
    from crossent.triton.bench import _copy_bandwidth

    return 2 * nbytes / _copy_bandwidth(nbytes) * 1e3


def install_peers(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[str]:
    """``pip install --no-deps`` the peers that do not import; a note for each that still does not."""
    missing = [package for module, package in PEERS.items() if importlib.util.find_spec(module) is None]
    notes = []
    if missing:
        done = run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *missing], text=True)
        if done.returncode != 0:
            notes.append(f"pip install {' '.join(missing)} failed (exit {done.returncode}): they are left out")
    importlib.invalidate_caches()
    return notes


def run_tests(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> int:
    """The Triton tests compiled on the GPU (``TRITON_INTERPRET`` unset); pytest's exit status."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    workers = str(max(1, min(8, (os.cpu_count() or 2) // 2)))  # Triton compiles each worker's kernels in parallel
    command = [sys.executable, "-m", "pytest", "-q", "-n", workers, "-p", "no:cacheprovider", *TESTS]
    return run(command, cwd=ROOT, env=env, text=True).returncode


def benchmark(budget_s: float, started: float, rounds: int = 5) -> list[Measured]:
    """Every case of ``SHAPES`` on the GPU; those that would start past the budget are marked skipped."""
    device = torch.device("cuda")
    settings = Settings(device, rounds=rounds, warmup=1, compiled=True, memory=True, seed=0, min_time_s=0.1)
    ops = gpu_ops()
    measured: list[Measured] = []
    for shape in SHAPES:
        op = ops[type(shape)]
        case = Case(op, shape, DTYPE)
        if time.monotonic() - started > budget_s:
            names = [s.name for s in op.subjects(compiled=True)]
            skipped = f"skipped: past the {budget_s:.0f} s budget"
            measured += [Measured(Row(op.name, shape.label, "bfloat16", "cuda", n, skipped), None) for n in names]
            continue
        print(f"gpu-check: {case.label}", flush=True)
        floor = copy_floor_ms(logits_bytes(shape))
        measured += [Measured(row, floor) for row in run_case(case, settings)]
        torch.cuda.empty_cache()
    return measured


def write_results(measured: Sequence[Measured], environment: Environment, path: Path) -> None:
    """The harness's CSV columns, plus the floor and each time over it."""
    floors: list[dict[str, object]] = [
        {
            "floor_ms": m.floor_ms,
            "full_floor_ratio": m.floor_ratio(m.row.full_ms),
            "forward_floor_ratio": m.floor_ratio(m.row.forward_ms),
        }
        for m in measured
    ]
    write_csv([m.row for m in measured], environment, path, floors)


def plot(measured: Sequence[Measured], environment: Environment, path: Path) -> None:
    """Forward+backward and no-grad forward times over the floor, and peak memory, per case and implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(f"{m.row.op}\n{m.row.shape}" for m in measured))
    impls = list(dict.fromkeys(m.row.impl for m in measured))
    panels = (
        ("fwd+bwd time / copy floor", lambda m: m.floor_ratio(m.row.full_ms)),
        ("no-grad forward time / copy floor", lambda m: m.floor_ratio(m.row.forward_ms)),
        ("fwd+bwd peak MiB above the inputs", lambda m: m.row.full_peak_mib),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 2.4 * len(cases)), 10), constrained_layout=True)
    width = 0.8 / max(len(impls), 1)
    for ax, (title, value) in zip(axes, panels, strict=True):
        for i, impl in enumerate(impls):
            xs, ys = [], []
            for j, case in enumerate(cases):
                found = [m for m in measured if m.row.impl == impl and f"{m.row.op}\n{m.row.shape}" == case]
                y = value(found[0]) if found else None
                if y is not None:
                    xs.append(j + (i - (len(impls) - 1) / 2) * width)
                    ys.append(y)
            ax.bar(xs, ys, width, label=impl)
        ax.set_title(title)
        ax.set_xticks(range(len(cases)), cases, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncols=min(len(impls), 4))
    fig.suptitle(f"gpu-check, bfloat16 · {environment_line(environment)}", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary(measured: Sequence[Measured]) -> str:
    """A Markdown table of the run: times, times over the floor, peaks and statuses."""
    lines = [
        "| op | shape | impl | fwd+bwd ms | / floor | fwd ms | / floor | peak MiB | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        r = m.row
        figures = (r.full_ms, m.floor_ratio(r.full_ms), r.forward_ms, m.floor_ratio(r.forward_ms))
        numbers = " | ".join(_number(v, 2) for v in figures)
        lines.append(f"| {r.op} | {r.shape} | {r.impl} | {numbers} | {_number(r.full_peak_mib, 0)} | {r.status} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=330.0,
        help="seconds from the start after which no benchmark case starts (default 330: room for the last "
        "case, torch.compile included, within 8 minutes)",
    )
    parser.add_argument("--no-tests", action="store_true", help="benchmark only")
    parser.add_argument("--out", type=Path, help="CSV path (default: benchmarks/results/gpu-check-<stamp>.csv)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    started = time.monotonic()
    for note in install_peers():
        print(f"gpu-check: {note}")
    status = 0 if args.no_tests else run_tests()
    print(
        f"gpu-check: Triton tests {'passed' if status == 0 else f'FAILED (exit {status})'} "
        f"after {time.monotonic() - started:.0f} s",
        flush=True,
    )
    environment = collect_environment("cuda")
    measured = benchmark(args.budget_s, started)
    stamp = environment.timestamp.replace("-", "").replace(":", "")
    path = args.out or RESULTS_DIR / f"gpu-check-{stamp}.csv"
    write_results(measured, environment, path)
    plot(measured, environment, path.with_suffix(".png"))
    print(summary(measured))
    print(f"gpu-check: wrote {path} and {path.with_suffix('.png')} after {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
