"""GPU benchmark of the Triton kernels against torch eager, torch.compile and installed peers.

``python -m crossent.triton.bench [--cases ce,ce-nograd,lce] [--dtype bfloat16] [--json out.json]``

Cases (LLM-sized, bfloat16 by default; the targets are for a 3.35 TB/s GPU such as an H100 SXM):
    ce         cross_entropy forward + backward, BT = 16384, V = 128256  (target <= 2.9 ms)
    ce-nograd  cross_entropy forward without grad, same shape            (target >= 90% of one read)
    lce        linear_cross_entropy forward + backward, M = 8192, H = 4096, V = 131072 (target <= 60 ms;
               extra memory = the weight gradient + O(M))

Providers: crossent (Triton), torch eager, torch.compile, liger-kernel and cut-cross-entropy
(only when they import), and torch's F.linear_cross_entropy for ``lce``. Times are medians of
``triton.testing.do_bench``; memory is the peak allocated above the inputs. The bandwidth floor
uses a measured device-to-device copy, so "% of floor" compares with what this GPU really moves.
Needs a CUDA GPU; prints one Markdown table per case with the GPU name.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Setup = Callable[[], Callable[[], Any]]


@dataclasses.dataclass(frozen=True)
class Result:
    """One provider on one case."""

    case: str
    provider: str
    ms: float | None
    peak_mib: float | None
    note: str = ""


def _copy_bandwidth(nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (one read + one write of ``nbytes``)."""
    import triton.testing

    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=10, rep=50)
    return 2 * nbytes / (ms * 1e-3)


def _measure(case: str, provider: str, setup: Setup) -> Result:
    import triton.testing

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    try:
        run = setup()
        run()  # compile / autotune outside the timing
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - start) / 2**20
        ms = triton.testing.do_bench(run, warmup=5, rep=30)
    except (ImportError, ModuleNotFoundError) as exc:
        return Result(case, provider, None, None, f"not installed ({exc.name})")
    except torch.OutOfMemoryError:
        return Result(case, provider, None, None, "out of memory")
    return Result(case, provider, ms, peak)


def _logits_setups(bt: int, v: int, dtype: torch.dtype, grad: bool) -> dict[str, Setup]:
    def make_inputs() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(bt, v, device="cuda", dtype=dtype, requires_grad=grad)
        y = torch.randint(0, v, (bt,), device="cuda")
        return x, y

    def step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Setup:
        def setup() -> Callable[[], Any]:
            x, y = make_inputs()

            def run() -> None:
                if grad:
                    x.grad = None
                    loss_fn(x, y).backward()
                else:
                    with torch.no_grad():
                        loss_fn(x, y)

            return run

        return setup

    import crossent

    setups: dict[str, Setup] = {
        "crossent (triton)": step(lambda x, y: crossent.cross_entropy(x, y, impl="triton")),
        "torch eager": step(lambda x, y: F.cross_entropy(x, y)),
        "torch.compile": step(torch.compile(lambda x, y: F.cross_entropy(x, y))),
    }

    def liger() -> Callable[[], Any]:
        module = importlib.import_module("liger_kernel.transformers.cross_entropy")
        return step(module.LigerCrossEntropyLoss())()

    setups["liger-kernel"] = liger
    return setups


def _linear_setups(m: int, h: int, v: int, dtype: torch.dtype) -> dict[str, Setup]:
    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = torch.randn(m, h, device="cuda", dtype=dtype, requires_grad=True)
        head = (torch.randn(v, h, device="cuda", dtype=dtype) / h**0.5).requires_grad_()
        return hidden, head, torch.randint(0, v, (m,), device="cuda")

    def step(loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Setup:
        def setup() -> Callable[[], Any]:
            hidden, head, y = inputs()

            def run() -> None:
                hidden.grad = head.grad = None
                loss_fn(hidden, head, y).backward()

            return run

        return setup

    from crossent.fused import linear_cross_entropy

    setups: dict[str, Setup] = {
        "crossent (fused)": step(lambda e, w, y: linear_cross_entropy(e, w, y)),
        "torch eager": step(lambda e, w, y: F.cross_entropy((e @ w.T).float(), y)),
        "torch.compile": step(torch.compile(lambda e, w, y: F.cross_entropy((e @ w.T).float(), y))),
        "torch F.linear_cross_entropy": step(lambda e, w, y: F.linear_cross_entropy(e, w, y)),
    }

    def liger() -> Callable[[], Any]:
        module = importlib.import_module("liger_kernel.transformers.fused_linear_cross_entropy")
        loss = module.LigerFusedLinearCrossEntropyLoss()
        return step(lambda e, w, y: loss(w, e, y))()

    def cce() -> Callable[[], Any]:
        module = importlib.import_module("cut_cross_entropy")
        return step(lambda e, w, y: module.linear_cross_entropy(e, w, y))()

    setups["liger-kernel"] = liger
    setups["cut-cross-entropy"] = cce
    return setups


def run_cases(cases: list[str], dtype: torch.dtype) -> tuple[list[Result], dict[str, float]]:
    """Benchmark ``cases``; also return the reference figures (copy bandwidth, floors)."""
    results: list[Result] = []
    bt, v = 16384, 128256
    logits_bytes = bt * v * torch.finfo(dtype).bits // 8
    bandwidth = _copy_bandwidth(logits_bytes)
    floors = {
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "ce_floor_ms (1 read + 1 write)": 2 * logits_bytes / bandwidth * 1e3,
        "ce-nograd_floor_ms (1 read)": logits_bytes / bandwidth * 1e3,
    }
    for case in cases:
        if case in ("ce", "ce-nograd"):
            setups = _logits_setups(bt, v, dtype, grad=case == "ce")
        elif case == "lce":
            setups = _linear_setups(8192, 4096, 131072, dtype)
        else:
            raise SystemExit(f"unknown case {case!r}; cases: ce, ce-nograd, lce")
        for provider, setup in setups.items():
            results.append(_measure(case, provider, setup))
    return results, floors


def _table(results: list[Result], floors: dict[str, float]) -> str:
    lines = [f"GPU: {torch.cuda.get_device_name()}  (torch {torch.__version__})", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in floors.items()]
    for case in dict.fromkeys(r.case for r in results):
        floor = floors.get("ce_floor_ms (1 read + 1 write)" if case == "ce" else "ce-nograd_floor_ms (1 read)")
        lines += ["", f"### {case}", "", "| provider | ms | % of floor | peak MiB | note |", "|---|---|---|---|---|"]
        for r in (r for r in results if r.case == case):
            ms = f"{r.ms:.3f}" if r.ms is not None else "-"
            pct = f"{100 * floor / r.ms:.0f}%" if r.ms and case != "lce" and floor else "-"
            peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "-"
            lines.append(f"| {r.provider} | {ms} | {pct} | {peak} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossent.triton.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", default="ce,ce-nograd,lce")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("crossent.triton.bench needs a CUDA GPU; GPU figures: not measured.")
        return 2
    results, floors = run_cases(args.cases.split(","), getattr(torch, args.dtype))
    print(_table(results, floors))
    if args.json:
        with open(args.json, "w") as f:
            payload = {"gpu": torch.cuda.get_device_name(), "floors": floors}
            json.dump({**payload, "results": [dataclasses.asdict(r) for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
