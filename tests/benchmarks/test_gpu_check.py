"""``make gpu-check``: one line and exit 0 without a GPU; its pieces (tests, peers, CSV, plot) with fakes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.environment import collect_environment
from benchmarks.paths import ROOT
from benchmarks.runner import Row
from benchmarks.shapes import LinearShape, LogitsShape


def _refuse(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    raise AssertionError(f"gpu-check ran a command without a GPU: {args}")


def test_without_cuda_it_says_so_in_one_line_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(subprocess, "run", _refuse)  # no pip install, no test run
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [gpu_check.NO_GPU]
    assert "no CUDA GPU" in out


def test_the_make_target_runs_the_script_and_ci_does_not() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\ngpu-check: $(STAMP)\n\t$(PY) -m benchmarks.gpu_check\n" in makefile
    test_recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert "gpu" not in test_recipe
    assert "gpu-check" not in (ROOT / ".ci" / "run").read_text()


def test_the_script_without_a_visible_gpu() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [gpu_check.NO_GPU]


def test_the_tests_run_compiled_not_interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.update(command=command, **kwargs)
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert gpu_check.run_tests(fake_run) == 3
    command = seen["command"]
    assert isinstance(command, list) and command[1:3] == ["-m", "pytest"]
    assert "tests/crossent_triton" in command
    env = seen["env"]
    assert isinstance(env, dict) and "TRITON_INTERPRET" not in env
    assert str(ROOT / "src") in env["PYTHONPATH"]


def test_peers_are_installed_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None if name == "cut_cross_entropy" else 1)
    notes = gpu_check.install_peers(fake_run)
    assert calls == [[sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "cut-cross-entropy"]]
    assert notes and "failed" in notes[0]
    calls.clear()
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: 1)
    assert gpu_check.install_peers(fake_run) == [] and calls == []


def test_the_cases_and_their_peers() -> None:
    ops = gpu_check.gpu_ops()
    ce, lce = ops[LogitsShape], ops[LinearShape]
    assert [s.name for s in ce.subjects(compiled=True)] == ["torch", "torch compiled", "liger-kernel", "crossent"]
    assert ce.intermediate_inputs  # Liger writes its gradient into the logits: each call gets fresh ones
    assert [s.name for s in lce.subjects(compiled=True)] == [
        "torch naive",
        "torch naive compiled",
        "liger-kernel",
        "cut-cross-entropy",
        "crossent",
    ]
    shapes = [s.label for s in gpu_check.SHAPES]
    assert shapes == [
        "16384x128256",
        "N=8192 H=4096 V=128256 ignored=0%",
        "16384x32768",
        "N=8192 H=4096 V=32768 ignored=0%",
    ]
    assert gpu_check.logits_bytes(LogitsShape(16384, 128256)) == 16384 * 128256 * 2
    assert gpu_check.logits_bytes(LinearShape(8192, 4096, 32768, 0.0)) == 8192 * 32768 * 2


def test_a_peer_that_does_not_import_is_unavailable() -> None:
    from benchmarks.ops import Unavailable

    subject = gpu_check._peer("no_such_peer_library.module", "loss", lambda found: found)  # type: ignore[arg-type,return-value]
    with pytest.raises(Unavailable, match="no_such_peer_library"):
        subject.load()


def test_results_csv_and_plot(tmp_path: Path) -> None:
    rows = [
        gpu_check.Measured(Row("cross_entropy", "16384x128256", "bfloat16", "cuda", "torch", "ok", 8.0, 1.0, 3.0), 2.0),
        gpu_check.Measured(Row("cross_entropy", "16384x128256", "bfloat16", "cuda", "crossent", "ok", 4.0), 2.0),
        gpu_check.Measured(Row("linear_cross_entropy", "N=8", "bfloat16", "cuda", "crossent", "skipped: past"), None),
    ]
    assert rows[0].floor_ratio(8.0) == 4.0 and rows[2].floor_ratio(1.0) is None
    environment = collect_environment("cpu")
    path = tmp_path / "gpu-check.csv"
    gpu_check.write_results(rows, environment, path)
    with open(path, newline="") as file:
        records = list(csv.DictReader(file))
    assert [r["impl"] for r in records] == ["torch", "crossent", "crossent"]
    assert float(records[0]["full_floor_ratio"]) == 4.0 and float(records[0]["forward_floor_ratio"]) == 1.5
    assert records[2]["floor_ms"] == "" and records[2]["status"].startswith("skipped")
    gpu_check.plot(rows, environment, path.with_suffix(".png"))
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = gpu_check.summary(rows)
    assert "| cross_entropy | 16384x128256 | torch | 8.00 | 4.00 | 3.00 | 1.50 | - | ok |" in table


def test_the_gpu_cases_run_in_the_harness_on_tiny_shapes() -> None:
    """The same ops and subjects, on the CPU at tiny shapes: a peer that does not import says so."""
    from benchmarks.runner import Case, Settings, run_case

    settings = Settings(torch.device("cpu"), rounds=1, warmup=0, compiled=False, memory=False, seed=0)
    ops = gpu_check.gpu_ops()
    for shape in (LogitsShape(67, 101), LinearShape(53, 24, 211, 0.0)):
        rows = run_case(Case(ops[type(shape)], shape, torch.float32), settings)
        by_impl = {row.impl: row for row in rows}
        assert by_impl["crossent"].status == "ok" and by_impl["crossent"].full_ms is not None
        assert by_impl["crossent"].grad_error is not None and by_impl["crossent"].grad_error < 1e-4
        for peer in ("liger-kernel", "cut-cross-entropy"):
            if peer in by_impl and by_impl[peer].status != "ok":
                assert by_impl[peer].status.startswith(("not available", "error")), by_impl[peer].status
