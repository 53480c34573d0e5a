"""``crossent env``: versions, devices, the native CPU kernels, Triton, and what ``impl="auto"`` picks
for each op on each device.

Paste its output into a bug report. The implementation choice comes from ``crossent._dispatch``, the
one place where crossent chooses, so this shows exactly what a call would run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
from dataclasses import asdict, dataclass

import torch

from crossent import _dispatch, native
from crossent.cli import _console

PACKAGES = ("torch", "numpy", "triton", "crossent", "rich", "matplotlib")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices() -> list[tuple[torch.device, str]]:
    """Each device torch can use here, with a short description."""
    found = [(torch.device("cpu"), f"{platform.machine() or 'cpu'}, {torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append(
                (
                    torch.device("cuda", index),
                    f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
                    f"compute capability {props.major}.{props.minor}",
                )
            )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append((torch.device("mps"), "Apple Metal"))
    return found


@dataclass(frozen=True)
class Environment:
    """Everything ``crossent env`` shows."""

    python: str
    platform: str
    versions: dict[str, str | None]  # None: not installed
    cuda: str | None  # the CUDA version torch was built with
    devices: dict[str, str]  # device -> description
    native: str  # the instruction-set level the native CPU kernels run at, or why they do not run
    native_library: str | None  # the shared library loaded
    cpu_model: str  # as /proc/cpuinfo names it
    triton_importable: bool
    triton_reason: str | None  # why crossent.triton does not import
    triton_interpret: str | None  # the TRITON_INTERPRET environment variable
    auto: dict[str, dict[str, str]]  # device -> op -> the impl= that "auto" resolves to, and why


def cpu_model() -> str:
    """/proc/cpuinfo's "model name" (lscpu's), with the family and model numbers that tell apart the
    generations a virtual machine's bare name ("AMD EPYC") leaves open."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the end of the first processor's block
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def backend_label(choice: str) -> str:
    """What ``_dispatch.explain`` says, in words for a reader: every backend is crossent's own.

    ``"torch (why)"`` is crossent's PyTorch path (its blocked engine on torch tensor ops, not torch's
    own loss), ``"native (avx512)"`` its C kernels, ``"triton"`` its Triton kernels.
    """
    backend, _, rest = choice.partition(" ")
    if backend == "torch":
        return f"crossent (PyTorch ops): {rest[1:-1]}" if rest.startswith("(") else "crossent (PyTorch ops)"
    label = {"native": "crossent native", "triton": "crossent Triton"}
    return f"{label.get(backend, backend)} {rest}".rstrip()


def report() -> Environment:
    devices = _devices()
    triton_reason = _dispatch.triton_status()
    loaded = native.load()
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        versions={package: _version(package) for package in PACKAGES},
        cuda=torch.version.cuda,
        devices={str(device): about for device, about in devices},
        native=loaded.level if isinstance(loaded, native.Library) else f"not running: {loaded}",
        native_library=str(loaded.path) if isinstance(loaded, native.Library) else None,
        cpu_model=cpu_model(),
        triton_importable=triton_reason is None,
        triton_reason=triton_reason,
        triton_interpret=os.environ.get("TRITON_INTERPRET"),
        auto={str(device): _dispatch.explain(device) for device, _ in devices},
    )


def run(args: argparse.Namespace) -> int:
    info = report()
    if args.json:
        print(json.dumps(asdict(info), indent=2))
        return 0
    out = _console.stdout()
    versions = [["python", info.python], *([name, v or "not installed"] for name, v in info.versions.items())]
    versions += [["platform", info.platform], ["CUDA (torch built with)", info.cuda or "none"]]
    out.print(_console.table("Versions", ["package", "version"], versions, numeric_from=2))
    devices = [[device, about] for device, about in info.devices.items()]
    out.print(_console.table("Devices", ["device", "about"], devices, numeric_from=2))
    out.print(f"CPU: {info.cpu_model}", soft_wrap=True, markup=False)
    where = f"  ({info.native_library})" if info.native_library else ""
    out.print(f"native CPU kernels: {info.native}{where}", soft_wrap=True, markup=False)
    state = "yes" if info.triton_importable else f"no: {info.triton_reason}"
    out.print(
        f"crossent.triton importable: {state}  (TRITON_INTERPRET={info.triton_interpret or 'unset'})",
        soft_wrap=True,
        markup=False,
    )
    names = list(info.auto)
    rows = [[op, *(backend_label(info.auto[name][op]) for name in names)] for op in _dispatch.OPS]
    out.print(_console.table('impl="auto" resolves to', ["op", *names], rows, numeric_from=len(names) + 1))
    return 0
