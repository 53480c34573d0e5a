"""Every docstring example in the crossent package runs and prints what it shows.

The modules are found by walking the package, so a new module's examples are run without editing this
file. Each docstring runs on its own, with empty globals: an example imports what it uses, as a reader
who copies it would have to.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pkgutil

import pytest
import torch

import crossent


def _modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(crossent.__path__, "crossent.")]
    return ["crossent", *sorted(name for name in names if not name.endswith("__main__"))]


def _needs_skip(module: str) -> str | None:
    """Why a module's examples cannot run here (the Triton kernels need CUDA or Triton's interpreter)."""
    if module.startswith("crossent.triton"):
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed"
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            return "the Triton examples need CUDA or TRITON_INTERPRET=1"
    return None


def _doctests(module: str) -> list[doctest.DocTest]:
    found = doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(module), module, globs={})
    return [test for test in found if test.examples]


def test_the_walk_finds_the_packages_examples() -> None:
    modules = _modules()
    for expected in ("crossent.functional", "crossent.nn", "crossent.numpy", "crossent.info", "crossent.fused"):
        assert expected in modules
    assert sum(len(_doctests(module)) for module in ("crossent.functional", "crossent.nn")) >= 15


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples(module: str) -> None:
    reason = _needs_skip(module)
    if reason is not None:
        pytest.skip(reason)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    for test in _doctests(module):
        report: list[str] = []
        result = runner.run(test, out=report.append)
        if result.failed:
            failures.append("".join(report))
    assert not failures, "\n".join(failures)


def test_a_wrong_example_fails() -> None:
    """The runner above can fail: an example whose output is wrong is reported."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong.py", 0)
    result = doctest.DocTestRunner().run(test, out=lambda text: None)
    assert result.failed == 1
