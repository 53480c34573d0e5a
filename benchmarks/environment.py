"""Where and with what a benchmark ran: machine, versions and commit, written into every CSV row."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import torch

from .paths import ROOT


@dataclass(frozen=True)
class Environment:
    machine: str
    cores: int
    threads: int
    python: str
    torch: str
    crossent: str
    commit: str
    timestamp: str
    load: str = ""


def collect_environment(device: str | torch.device = "cpu") -> Environment:
    """The environment of a run on ``device``, stamped with the current UTC time."""
    device = torch.device(device)
    machine = _cpu_model()
    if device.type == "cuda":
        machine += f" + {torch.cuda.get_device_name(device)}"
    return Environment(
        machine=machine,
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        crossent=_version("crossent"),
        commit=_commit(),
        timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        load=_load_average(),
    )


def _load_average() -> str:
    """The 1-, 5- and 15-minute load averages when the run started: how busy the machine was."""
    try:
        return " ".join(f"{load:.2f}" for load in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def _cpu_model() -> str:
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


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """The checkout's commit, with "+dirty" when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit
