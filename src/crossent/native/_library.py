"""Load the native kernels: the best instruction-set level this CPU supports, or why none loads.

``CROSSENT_ISA=avx2`` (or ``scalar``) caps the level, so every path can be tested on any machine;
``CROSSENT_NATIVE=0`` turns the native kernels off. When they cannot load (no compiler, a failed
build, a CPU that is not x86-64), the PyTorch path runs instead: ``crossent env`` says why, and the
first call that would have used them warns once.
"""

from __future__ import annotations

import ctypes
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from crossent.native import _build

PACKAGE_DIR = Path(__file__).parent / "_lib"


@dataclass(frozen=True)
class Library:
    level: str  # the instruction-set level loaded
    cpu_level: str  # the best one the CPU supports
    path: Path
    handle: ctypes.CDLL


_I64, _F32, _INT, _PTR = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {
    # ..., threads, bad, then the language-model options: softcap, temperature, z_loss, entropy, correct,
    # lse_coef, ent_coef, ent_sum
    "crossent_cross_entropy": [_INT, _PTR, _I64, _I64, _PTR, _PTR, _I64, _PTR, _F32, _PTR, _I64, _F32, _INT, _INT]
    + [_PTR] * 6
    + [_INT, _PTR, _F32, _F32, _F32]
    + [_PTR] * 5,
    "crossent_nll_loss": [_INT, _PTR, _I64, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR],
    "crossent_nll_loss_grad": [_INT, _PTR, _I64, _I64, _PTR, _I64, _PTR, _PTR, _I64, _INT],
    "crossent_vector_math": [_INT, _PTR, _PTR, _I64],
    "crossent_softmax": [_INT, _INT, _INT, _PTR, _PTR, _PTR, _I64, _I64, _INT],
    "crossent_elementwise": [_INT, _INT, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _INT, _PTR, _F32]
    + [_PTR] * 4
    + [_INT],
}


def _directories() -> list[Path]:
    """Where built libraries may live: in the package, then in the user's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crossent"
    return [PACKAGE_DIR, cache]


def _find_or_build() -> dict[str, Path]:
    for directory in _directories():
        found = {level: directory / _build.library_name(level) for level in _build.LEVELS}
        if all(p.exists() for p in found.values()):
            return found
    errors = []
    for directory in _directories():
        try:
            return dict(zip(_build.LEVELS, _build.build(directory), strict=True))
        except (OSError, RuntimeError) as exc:
            errors.append(str(exc))
    raise RuntimeError("; ".join(dict.fromkeys(errors)))


def _open(path: Path) -> ctypes.CDLL:
    handle = ctypes.CDLL(str(path))
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    handle.crossent_isa.restype = ctypes.c_char_p
    return handle


_loaded: Library | str | None = None


def load() -> Library | str:
    """The loaded kernels, or the reason they cannot run here (decided once per process)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def load_level(level: str) -> Library:
    """The kernels of one instruction-set level, whatever CROSSENT_ISA says (tests compare the levels);
    ``RuntimeError`` when this CPU cannot run it."""
    paths = _find_or_build()
    baseline = _open(paths["scalar"])
    cpu = {3: "avx512", 2: "avx2"}.get(baseline.crossent_cpu_level(), "scalar")
    levels = list(_build.LEVELS)
    if levels.index(level) < levels.index(cpu):
        raise RuntimeError(f"this CPU runs {cpu} at best, not {level}")
    return Library(level, cpu, paths[level], baseline if level == "scalar" else _open(paths[level]))


def _load() -> Library | str:
    if os.environ.get("CROSSENT_NATIVE", "1") == "0":
        return "turned off by CROSSENT_NATIVE=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the native kernels are built for x86-64; this CPU is {platform.machine()}"
    levels = list(_build.LEVELS)
    cap = os.environ.get("CROSSENT_ISA", levels[0]).lower()
    if cap not in levels:
        return f"CROSSENT_ISA must be one of {', '.join(levels)}; got {cap!r}"
    try:
        best = load_level("scalar").cpu_level
        return load_level(levels[max(levels.index(best), levels.index(cap))])
    except (OSError, RuntimeError) as exc:
        return f"the native kernels could not be built or loaded: {exc}"


_warned = False


def library() -> Library | None:
    """The kernels, or None (warning once, the first time a call would have used them)."""
    global _warned
    loaded = load()
    if isinstance(loaded, Library):
        return loaded
    if not _warned and loaded != "turned off by CROSSENT_NATIVE=0":
        _warned = True
        warnings.warn(f"crossent: {loaded}; using the PyTorch path", RuntimeWarning, stacklevel=3)
    return None


@torch.compiler.assume_constant_result
def unavailable_reason() -> str:
    """Why the kernels cannot run here, or "" when they can (warning once; a constant to the compiler)."""
    return "" if library() is not None else str(load())


@torch.compiler.assume_constant_result
def quiet_unavailable_reason() -> str:
    """As ``unavailable_reason``, without the warning (for a call that insists on the kernels)."""
    loaded = load()
    return "" if isinstance(loaded, Library) else loaded
