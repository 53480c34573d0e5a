"""Loading the native kernels: levels, CROSSENT_ISA and CROSSENT_NATIVE, the fallback to the PyTorch
path with one warning when they cannot load, and what ``crossent env`` and ``explain`` report.

The environment variables are read once per process, so the end-to-end checks run in fresh
interpreters; the loader's decisions are also checked in-process through ``_library._load``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import crossent
from crossent import _dispatch
from crossent.cli import main as cli_main
from crossent.native import _build, _library
from tests.native.native_env import LEVELS, LOADED, needs_native, supported_levels

NATIVE_OPS = (
    "cross_entropy",
    "nll_loss",
    "log_softmax",
    "softmax",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
)


def _python(code: str, **env_vars: str) -> dict:
    """Run ``code`` in a fresh interpreter with ``env_vars`` (the loader's own variables cleared
    first, PYTHONWARNINGS unset); it prints one JSON object as its last line, returned here."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "CROSSENT_ISA", "CROSSENT_NATIVE")}
    env.update(env_vars)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# A fresh process: the failing calls, the warnings of two calls of each kind, results against torch, and
# what explain() and `crossent env --json` say.
PROBE = """
import contextlib, io, json, warnings
import torch, torch.nn.functional as F
{prelude}
import crossent
from crossent import _dispatch
from crossent.native import _library

torch.manual_seed(0)
x, t, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, -100]), torch.rand(6, 5)
report = {{}}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ce = [crossent.cross_entropy(x, t, label_smoothing=0.1) for _ in range(2)]
    sm = [crossent.log_softmax(x, 1) for _ in range(2)]
    bce = crossent.binary_cross_entropy_with_logits(x, y)
report["warnings"] = [f"{{w.category.__name__}}: {{w.message}}" for w in caught]
report["match"] = all(
    torch.allclose(a, b, atol=1e-6)
    for a, b in [
        (ce[0], F.cross_entropy(x, t, label_smoothing=0.1)), (ce[1], ce[0]),
        (sm[0], F.log_softmax(x, 1)), (bce, F.binary_cross_entropy_with_logits(x, y)),
    ]
)
try:
    crossent.cross_entropy(x, t, impl="native")
    report["native_error"] = None
except RuntimeError as exc:
    report["native_error"] = str(exc)
loaded = _library.load()
report["loaded"] = loaded if isinstance(loaded, str) else {{"level": loaded.level, "cpu_level": loaded.cpu_level,
                                                           "path": str(loaded.path)}}
report["explain"] = _dispatch.explain(torch.device("cpu"))
if {with_env}:  # `crossent env` imports Triton: only where its report is checked
    from crossent.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["env", "--json"])
    env = json.loads(out.getvalue())
    report["env"] = {{"native": env["native"], "native_library": env["native_library"], "auto": env["auto"]["cpu"]}}
print(json.dumps(report))
"""


def test_turned_off_by_crossent_native_0():
    report = _python(PROBE.format(prelude="", with_env=True), CROSSENT_NATIVE="0")
    assert report["loaded"] == "turned off by CROSSENT_NATIVE=0"
    assert report["warnings"] == []  # turned off on purpose: nothing to warn about
    assert report["match"]
    for op in NATIVE_OPS:
        assert report["explain"][op].startswith("torch"), report["explain"]
        assert "CROSSENT_NATIVE" in report["explain"][op]
    assert "impl='native' cannot run cross_entropy" in report["native_error"]
    assert "CROSSENT_NATIVE=0" in report["native_error"]
    assert report["env"]["native"].startswith("not running") and "CROSSENT_NATIVE=0" in report["env"]["native"]
    assert report["env"]["native_library"] is None
    assert report["env"]["auto"] == report["explain"]


@needs_native
def test_crossent_isa_caps_the_level():
    if "avx2" not in supported_levels():
        pytest.skip("this CPU does not run avx2")
    report = _python(PROBE.format(prelude="", with_env=False), CROSSENT_ISA="avx2")
    assert report["loaded"]["level"] == "avx2"
    assert report["loaded"]["cpu_level"] == LOADED.cpu_level
    assert f"libcrossent-avx2-{_build.fingerprint()}" in report["loaded"]["path"]
    assert report["warnings"] == [] and report["match"] and report["native_error"] is None
    assert all(report["explain"][op] == "native (avx2)" for op in NATIVE_OPS), report["explain"]


def test_a_bogus_crossent_isa_is_reported():
    report = _python(PROBE.format(prelude="", with_env=False), CROSSENT_ISA="bogus")
    assert report["loaded"] == "CROSSENT_ISA must be one of avx512, avx2, scalar; got 'bogus'"
    assert len(report["warnings"]) == 1, report["warnings"]
    assert report["warnings"][0].startswith("RuntimeWarning: crossent: CROSSENT_ISA must be one of")
    assert report["match"]
    assert "CROSSENT_ISA must be one of" in report["native_error"]
    assert report["explain"]["cross_entropy"] == f"torch ({report['loaded']})"


def test_a_failed_build_falls_back_with_one_warning(tmp_path):
    # no library of this fingerprint anywhere, and a compiler that always fails
    prelude = "import crossent.native._build as _build\n_build.fingerprint = lambda: 'missing'"
    report = _python(PROBE.format(prelude=prelude, with_env=True), XDG_CACHE_HOME=str(tmp_path), CC="false")
    reason = report["loaded"]
    assert isinstance(reason, str) and reason.startswith("the native kernels could not be built or loaded: ")
    assert "false failed to build the avx512 kernels" in reason
    assert report["warnings"] == [f"RuntimeWarning: crossent: {reason}; using the PyTorch path"]
    assert report["match"]
    assert reason in report["native_error"]
    for op in NATIVE_OPS:
        assert report["explain"][op] == f"torch ({reason})"
    assert report["env"]["native"] == f"not running: {reason}"
    # the failed builds left nothing behind, in the package or in the cache
    assert list(_library.PACKAGE_DIR.rglob("*missing*")) == []
    assert [p for p in (Path(tmp_path) / "crossent").rglob("*") if p.is_file()] == []


# ---- in-process: the loader's decisions and the one warning ----------------------------------------


@needs_native
@pytest.mark.parametrize("level", LEVELS)
def test_each_level_is_its_own_library(level):
    if level not in supported_levels():
        pytest.skip(f"this CPU does not run {level}")
    lib = _library.load_level(level)
    assert lib.level == level and lib.cpu_level == LOADED.cpu_level
    assert lib.path.exists() and lib.path.name == _build.library_name(level)
    assert lib.handle.crossent_isa() == level.encode()


@needs_native
def test_load_picks_the_best_level_and_is_decided_once():
    assert LOADED.level == LOADED.cpu_level == supported_levels()[0]
    assert _library.load() is _library.load()
    assert crossent.native.library() is _library.load()


@needs_native
@pytest.mark.parametrize("cap", ["avx512", "avx2", "scalar"])
def test_the_cap_in_process(cap, monkeypatch):
    monkeypatch.setenv("CROSSENT_ISA", cap)
    monkeypatch.delenv("CROSSENT_NATIVE", raising=False)
    levels = list(LEVELS)
    expected = levels[max(levels.index(cap.lower()), levels.index(LOADED.cpu_level))]
    assert _library._load().level == expected


@pytest.mark.parametrize(
    "env, machine, reason",
    [
        ({"CROSSENT_NATIVE": "0"}, "x86_64", "turned off by CROSSENT_NATIVE=0"),
        ({"CROSSENT_ISA": "sse2"}, "x86_64", "CROSSENT_ISA must be one of avx512, avx2, scalar; got 'sse2'"),
        ({}, "aarch64", "the native kernels are built for x86-64; this CPU is aarch64"),
    ],
    ids=["off", "bogus", "arm"],
)
def test_the_reasons_in_process(env, machine, reason, monkeypatch):
    monkeypatch.delenv("CROSSENT_ISA", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(_library.platform, "machine", lambda: machine)
    assert _library._load() == reason


@needs_native
def test_a_level_above_the_cpu_is_refused(monkeypatch):
    real_open = _library._open

    class AnAvx2Cpu:
        def __init__(self, handle):
            self.handle = handle

        def crossent_cpu_level(self):
            return 2

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(_library, "_open", lambda path: AnAvx2Cpu(real_open(path)))
    with pytest.raises(RuntimeError, match="this CPU runs avx2 at best, not avx512"):
        _library.load_level("avx512")
    assert _library.load_level("scalar").cpu_level == "avx2"
    monkeypatch.delenv("CROSSENT_ISA", raising=False)
    monkeypatch.delenv("CROSSENT_NATIVE", raising=False)
    assert _library._load().level == "avx2"


def test_unavailable_kernels_warn_once_and_fall_back(monkeypatch):
    monkeypatch.setattr(_library, "_loaded", "no kernels in this test")
    monkeypatch.setattr(_library, "_warned", False)
    x, t = torch.randn(5, 7), torch.tensor([0, 1, 2, 3, 6])
    with pytest.warns(RuntimeWarning, match="^crossent: no kernels in this test; using the PyTorch path$"):
        first = crossent.cross_entropy(x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = crossent.cross_entropy(x, t)
        crossent.softmax(x, 1)
        assert crossent.native.library() is None
    torch.testing.assert_close(first, F.cross_entropy(x, t))
    assert torch.equal(first, second)
    assert crossent.native.unavailable_reason() == "no kernels in this test"
    assert _dispatch.explain(torch.device("cpu"))["kl_div"] == "torch (no kernels in this test)"
    with pytest.raises(RuntimeError, match="impl='native' cannot run log_softmax: no kernels in this test"):
        crossent.log_softmax(x, 1, impl="native")


def test_turned_off_kernels_do_not_warn(monkeypatch):
    monkeypatch.setattr(_library, "_loaded", "turned off by CROSSENT_NATIVE=0")
    monkeypatch.setattr(_library, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert crossent.native.library() is None
        crossent.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]))


@needs_native
def test_explain_and_crossent_env_name_the_level(capsys, monkeypatch):
    table = _dispatch.explain(torch.device("cpu"))
    for op in NATIVE_OPS:
        assert table[op] == f"native ({LOADED.level})"
    assert table["linear_cross_entropy"].startswith("torch")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["env", "--json"]) == 0
    report = json.loads(out.getvalue())
    assert report["native"] == LOADED.level
    assert report["native_library"] == str(LOADED.path)
    assert report["auto"]["cpu"] == table
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert cli_main(["env"]) == 0
    text = capsys.readouterr().out
    assert f"native CPU kernels: {LOADED.level}  ({LOADED.path})" in text
    assert f"native ({LOADED.level})" in text
