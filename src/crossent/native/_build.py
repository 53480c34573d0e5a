"""Compile the native CPU kernels: one shared library per instruction-set level, from ``csrc/``.

The C sources are plain loops that GCC vectorizes at each level's width; the loader
(``crossent.native._library``) picks the best level the CPU supports at run time. Run
``python -m crossent.native build`` to build them ahead of time (``make setup`` and ``pip install``
do); otherwise the first call that needs them builds them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).parent / "csrc"

# each level's flags; the names are what CROSSENT_ISA accepts, best first
LEVELS: dict[str, tuple[str, ...]] = {
    "avx512": (
        "-mavx512f",
        "-mavx512bw",
        "-mavx512dq",
        "-mavx512vl",
        "-mavx2",
        "-mfma",
        "-mf16c",
        "-mprefer-vector-width=512",
    ),
    "avx2": ("-mavx2", "-mfma", "-mf16c"),
    "scalar": (),
}

# no -ffast-math: NaN and inf keep their IEEE meaning, and sums keep the order the source gives them.
# -fno-trapping-math lets GCC turn the branch-free selects into vector blends.
_FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden")


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``gcc``/``cc`` on the PATH; None without one."""
    for name in (os.environ.get("CC"), "gcc", "cc"):
        if name and shutil.which(name):
            return name
    return None


def fingerprint() -> str:
    """A hash of the sources and flags: a library built from other sources is never loaded."""
    digest = hashlib.sha256(repr((_FLAGS, LEVELS)).encode())
    for path in sorted(SOURCES.glob("*.[ch]")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def library_name(level: str) -> str:
    return f"libcrossent-{level}-{fingerprint()}.so"


def build(directory: Path, levels: tuple[str, ...] = tuple(LEVELS)) -> list[Path]:
    """Compile ``levels`` into ``directory``; each file appears whole (written aside, then renamed).

    Raises ``RuntimeError`` with the compiler's message when a build fails.
    """
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    directory.mkdir(parents=True, exist_ok=True)
    built = []
    for level in levels:
        path = directory / library_name(level)
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=directory) as scratch:
                partial = Path(scratch) / path.name
                command = [
                    cc,
                    *_FLAGS,
                    *LEVELS[level],
                    f'-DCROSSENT_ISA="{level}"',
                    "-o",
                    str(partial),
                    str(SOURCES / "crossent.c"),
                    "-lm",
                    "-pthread",
                ]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"{cc} failed to build the {level} kernels:\n{result.stderr.strip()}")
                os.replace(partial, path)
        built.append(path)
    for stale in set(directory.glob("libcrossent-*.so")) - set(directory.glob(f"libcrossent-*-{fingerprint()}.so")):
        stale.unlink(missing_ok=True)  # built from other sources; a process that has one open keeps its copy
    return built
