"""Where and with what a benchmark ran: machine, versions and commit, written into every CSV row."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import torch

from crossent import native
from crossent.cli.env import cpu_model

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
    native: str = ""  # the native CPU kernels' instruction-set level, or why they do not run


def collect_environment(device: str | torch.device = "cpu") -> Environment:
    """The environment of a run on ``device``, stamped with the current UTC time."""
    device = torch.device(device)
    machine = cpu_model()
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
        native=getattr(native.load(), "level", "off"),
    )


def _load_average() -> str:
    """The 1-, 5- and 15-minute load averages when the run started: how busy the machine was."""
    try:
        return " ".join(f"{load:.2f}" for load in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


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
