"""Builds the native CPU kernels with the package (``pip install .`` and editable installs alike).

A machine without a C compiler still installs: the kernels are then built on first use, or the
PyTorch path runs (``crossent env`` says which).
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _load_builder():
    path = Path(__file__).parent / "src" / "crossent" / "native" / "_build.py"
    spec = importlib.util.spec_from_file_location("crossent_native_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithKernels(build_py):
    def run(self):
        super().run()
        root = Path("src") if getattr(self, "editable_mode", False) else Path(self.build_lib)
        try:
            _load_builder().build(root / "crossent" / "native" / "_lib")
        except (OSError, RuntimeError) as exc:
            print(f"crossent: native kernels not built ({exc}); they build on first use", file=sys.stderr)


setup(cmdclass={"build_py": BuildWithKernels})
