"""Compile every kernel specialisation ahead of time for a GPU architecture, without a GPU.

``python -m crossent.triton.aot [--arch 90]`` runs the launchers on small CPU tensors in dry-run
mode (launches are recorded, not executed) with the GPU tuning, compiles each distinct
specialisation to a cubin with Triton's bundled toolchain, and prints registers and spills per
thread from ``cuobjdump``. It must run without ``TRITON_INTERPRET=1`` (the interpreter replaces
the kernels). The tests use it to prove that the kernels exercised under the interpreter also
build for real hardware.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import tempfile
import time
from typing import Any

import torch
import triton

from crossent.triton._common import gpu_tuning, record_launches, use_tuning

_TORCH_TO_TRITON = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.uint8: "u8",
    torch.bool: "i1",
}


@dataclasses.dataclass(frozen=True)
class Build:
    """One compiled specialisation."""

    kernel: str
    constexprs: str
    num_warps: int
    registers: int | None
    spill_bytes: int | None
    seconds: float


def _signature(kernel: Any, kwargs: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    for param in kernel.params:
        value = kwargs[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[param.name] = value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = "*" + _TORCH_TO_TRITON[value.dtype]
        elif isinstance(value, bool):
            signature[param.name] = "i1"
        elif isinstance(value, int):
            signature[param.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        else:
            signature[param.name] = "fp32"
    return signature, constexprs


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, spill stores in bytes) per thread, read from cuobjdump's resource report."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", out)
    spills = re.search(r"STACK:(\d+)", out)
    return (int(regs.group(1)) if regs else None), (int(spills.group(1)) if spills else None)


def compile_launches(launches: list[tuple[Any, tuple[int, ...], dict[str, Any]]], arch: int = 90) -> list[Build]:
    """Compile each distinct (kernel, signature, constexprs, num_warps) of ``launches``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    builds: list[Build] = []
    seen: set[str] = set()
    for kernel, _grid, kwargs in launches:
        num_warps = int(kwargs.get("num_warps", 4))
        signature, constexprs = _signature(kernel, kwargs)
        shown = ", ".join(f"{k}={v}" for k, v in constexprs.items())
        key = f"{kernel.__name__}|{signature}|{shown}|{num_warps}"
        if key in seen:
            continue
        seen.add(key)
        start = time.perf_counter()
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": num_warps},
        )
        regs, stack = _resource_usage(compiled.asm["cubin"])
        builds.append(Build(kernel.__name__, shown, num_warps, regs, stack, time.perf_counter() - start))
    return builds


def _exercise() -> None:
    """Launcher calls covering every kernel and each constexpr branch that matters on a GPU."""
    from crossent import triton as ct

    bf16, i64 = torch.bfloat16, torch.int64
    for C in (1000, 16384, 50000):
        x = torch.zeros(4, C, dtype=bf16, requires_grad=True)
        y = torch.zeros(4, dtype=i64)
        w = torch.ones(C, dtype=bf16)
        ct.cross_entropy(x, y, None, -100, "mean", 0.0, False).backward()
        ct.cross_entropy(x, y, w, -100, "none", 0.1, False).sum().backward()
        ct.cross_entropy(x, torch.zeros_like(x), w, -100, "sum", 0.1, False).backward()
        ct.log_softmax(x, 1).sum().backward()
        ct.softmax(x, 1).sum().backward()
        x64 = x.detach().double().requires_grad_()
        ct.cross_entropy(x64, y, None, -100, "mean", 0.0, False).backward()
        ct.log_softmax(x64, 1).sum().backward()
        logits = torch.zeros(4, C, dtype=bf16)
        ct.linear_cross_entropy_chunk(logits, y, None, -100, 0.0, torch.ones(()), logits)
        # the fused loss's 'none' backward: one scale per row, with class weights and label smoothing
        ct.linear_cross_entropy_chunk(logits, y, w, -1, 0.1, torch.ones(4), logits)
        ct.linear_cross_entropy_chunk(logits, y, w, -1, 0.1, torch.ones(()), logits)
        ct.linear_cross_entropy_chunk(logits, y, None, -1, 0.0, torch.ones(4), logits)
    z = torch.zeros(2, 300, 3, requires_grad=True)
    ct.nll_loss(z, torch.zeros(2, 3, dtype=i64), None, -100, "mean").backward()
    ct.cross_entropy(z.double(), torch.zeros(2, 3, dtype=i64), None, -100, "mean", 0.0, False).backward()
    e = torch.zeros(8, 5, requires_grad=True)
    t = torch.zeros(8, 5, requires_grad=True)
    ct.binary_cross_entropy_with_logits(e, t, torch.ones(5), "mean", torch.ones(5)).backward()
    ct.binary_cross_entropy(e, t, None, "none").sum().backward()
    ct.kl_div(e, t, "batchmean", False).backward()
    ct.kl_div(e, t, "none", True).sum().backward()


def representative_launches() -> list[tuple[Any, tuple[int, ...], dict[str, Any]]]:
    """Record (without executing) the launches of ``_calls`` under GPU-like tuning."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("crossent.triton.aot needs the real compiler: unset TRITON_INTERPRET")
    with use_tuning(**dataclasses.asdict(gpu_tuning(sms=132))):  # an H100 SXM
        with record_launches(execute=False) as seen:
            _exercise()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossent.triton.aot", description=__doc__)
    parser.add_argument("--arch", type=int, default=90, help="SM architecture, e.g. 80 (A100), 90 (H100)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # FMA contraction, Triton's default so far
    builds = compile_launches(representative_launches(), args.arch)
    print(f"{'kernel':<28} {'warps':>5} {'regs':>5} {'stack':>6} {'s':>5}  constexprs")
    for b in builds:
        row = f"{b.kernel:<28} {b.num_warps:>5} {b.registers!s:>5} {b.spill_bytes!s:>6} {b.seconds:>5.1f}"
        print(f"{row}  {b.constexprs}")
    print(f"{len(builds)} specialisations compiled for sm_{args.arch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Build", "compile_launches", "main", "representative_launches"]
