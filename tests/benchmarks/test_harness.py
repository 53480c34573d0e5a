"""The benchmark harness end to end on the ``tiny`` shape set: timing, float64 errors, CPU peak memory
in fresh processes, rows for implementations that are missing or misbehave, the CLI's table and CSV."""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import benchmarks
from benchmarks.memory import peak_rss_growth
from benchmarks.memory_probe import ProbeSpec, cpu_peak_growth_in_fresh_process
from benchmarks.ops import OPS, Subject, from_path
from benchmarks.problems import class_logits
from benchmarks.shapes import LogitsShape, shape_to_dict
from benchmarks.steps import Steps

MIB = 2**20
# One timed sample per implementation and mode: batches of short calls still, but no extra rounds.
ONE_SAMPLE: dict[str, Any] = {"rounds": 1, "warmup": 0, "min_time_s": 0.0}
# Largest error torch itself makes against the float64 truth on the tiny set, with a wide margin.
TORCH_ERROR_BOUND = {"float32": 1e-4, "bfloat16": 0.1}


def _by_case(rows: list[benchmarks.Row]) -> dict[tuple[str, str, str], list[benchmarks.Row]]:
    cases: dict[tuple[str, str, str], list[benchmarks.Row]] = {}
    for row in rows:
        cases.setdefault((row.op, row.shape, row.dtype), []).append(row)
    return cases


def _assert_measured(row: benchmarks.Row, *, memory: bool) -> None:
    assert row.status == "ok", row
    assert row.full_ms is not None and row.full_ms > 0
    assert row.forward_ms is not None and row.forward_ms > 0
    assert row.full_speedup is not None and row.forward_speedup is not None
    assert row.value_error is not None and math.isfinite(row.value_error)
    assert row.grad_error is not None and math.isfinite(row.grad_error)
    if memory:
        assert row.full_peak_mib is not None and row.full_peak_mib >= 0
        assert row.forward_peak_mib is not None and row.forward_peak_mib >= 0


def test_every_op_and_dtype_gets_a_row_per_implementation() -> None:
    rows = benchmarks.run(shape_sets=["tiny"], memory=False, **ONE_SAMPLE)

    cases = _by_case(rows)
    assert len(cases) == len(OPS) * 2
    for (op_name, _, dtype), case_rows in cases.items():
        assert [row.impl for row in case_rows] == [subject.name for subject in OPS[op_name].subjects(False)]
        reference, *others = case_rows
        _assert_measured(reference, memory=False)
        assert reference.full_speedup == reference.forward_speedup == 1.0
        assert max(reference.value_error or 0, reference.grad_error or 0) < TORCH_ERROR_BOUND[dtype]
        for row in others:
            if row.status == "ok":
                _assert_measured(row, memory=False)
            else:
                assert row.status.startswith(("not available: ", "error (")), row


def test_peak_memory_is_measured_in_fresh_processes() -> None:
    rows = benchmarks.run(["cross_entropy"], ["tiny"], ["float32"], **ONE_SAMPLE)

    reference, candidate = rows
    _assert_measured(reference, memory=True)
    if candidate.status == "ok":
        _assert_measured(candidate, memory=True)


def test_probe_counts_the_gradient_and_the_temporaries_of_torch_cross_entropy() -> None:
    """torch's fwd+bwd holds at least the logits-sized gradient; its no-grad forward much less."""
    shape = LogitsShape(256, 8192)
    logits_mib = shape.rows * shape.classes * 4 / MIB
    spec = ProbeSpec("cross_entropy", shape_to_dict(shape), "float32", "torch", False, 0, torch.get_num_threads())

    peaks = cpu_peak_growth_in_fresh_process(spec)

    assert logits_mib <= peaks["full"] / MIB <= 5 * logits_mib
    assert peaks["forward"] < peaks["full"]


def test_peak_rss_growth_is_the_peak_not_the_end_state() -> None:
    """A 64 MiB temporary freed before the call returns still counts (64 MiB is above glibc's
    largest mmap threshold, so it is mapped and unmapped whatever the allocator's state)."""

    def temporary_then_small_result() -> torch.Tensor:
        torch.ones(64 * MIB // 4)
        return torch.ones(8 * MIB // 4)

    growth_mib = peak_rss_growth(temporary_then_small_result) / MIB

    assert 63 <= growth_mib <= 66


def test_intermediate_inputs_reach_the_op_as_non_leaves_and_leave_the_problem_untouched() -> None:
    problem = class_logits(LogitsShape(5, 7), torch.float32, torch.device("cpu"), 0)
    original = problem["input"].detach().clone()

    def overwrite_then_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert not input.is_leaf
        loss = F.cross_entropy(input, target)
        with torch.no_grad():
            input.zero_()
        return loss

    steps = Steps(overwrite_then_loss, OPS["cross_entropy"].call, problem, intermediate_inputs=True)
    steps.reset()
    steps.run("full")

    expected = torch.func.grad(lambda x: F.cross_entropy(x, problem["target"]))(original)
    torch.testing.assert_close(steps.gradient("input"), expected)
    assert problem["input"].grad is None
    assert torch.equal(problem["input"].detach(), original)


class _ClobbersOutput(torch.autograd.Function):
    """log_softmax whose backward zeroes the output it saved: the bug the harness must flag."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        output = x.log_softmax(dim)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (output,) = ctx.saved_tensors
        grad_input = grad - output.exp() * grad.sum(-1, keepdim=True)
        output.zero_()
        return grad_input, None


def _clobbering_log_softmax(input: torch.Tensor, dim: int) -> torch.Tensor:
    return _ClobbersOutput.apply(input, dim)


def _overwriting_cross_entropy(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target.zero_()
    return F.cross_entropy(input, target)


@pytest.mark.parametrize(
    ("base", "candidate", "status"),
    [
        (
            "cross_entropy",
            from_path("crossent.functional.no_such_loss"),
            "not available: crossent.functional.no_such_loss does not exist",
        ),
        ("cross_entropy", from_path("no_such_package.loss"), "not available: no_such_package does not import"),
        ("cross_entropy", from_path("torch.nn.functional.cross_entropy", no_such_option=1), "error (check): TypeError"),
        ("cross_entropy", lambda: _overwriting_cross_entropy, "error (check): RuntimeError: it overwrote its input"),
        ("log_softmax", lambda: _clobbering_log_softmax, "error (check): RuntimeError: backward overwrote the output"),
    ],
    ids=["missing", "unimportable", "failing", "overwrites-input", "overwrites-output"],
)
def test_an_implementation_that_is_missing_or_misbehaves_gets_a_row_saying_so(
    monkeypatch: pytest.MonkeyPatch, base: str, candidate: Any, status: str
) -> None:
    op = dataclasses.replace(OPS[base], name="probe", candidate=Subject("crossent", candidate))
    monkeypatch.setitem(OPS, "probe", op)

    reference, row = benchmarks.run(["probe"], ["tiny"], ["float32"], memory=False, **ONE_SAMPLE)

    _assert_measured(reference, memory=False)
    assert row.status.startswith(status), row.status
    assert row.full_ms is None


def test_main_prints_the_table_and_writes_a_csv_with_machine_versions_and_commit(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.csv"
    argv = ["--ops", "cross_entropy", "--shapes", "tiny", "--dtypes", "float32", "--rounds", "1", "--no-memory"]
    argv += ["--min-time-ms", "0"]

    assert benchmarks.main([*argv, "--out", str(path)]) == 0

    printed = capsys.readouterr().out
    assert "crossent against torch" in printed and "cross_entropy" in printed
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == benchmarks.CSV_COLUMNS
    assert [row["impl"] for row in rows] == ["torch", "crossent"]
    for row in rows:
        assert row["machine"] and row["commit"] and int(row["cores"]) >= 1
        assert row["torch"] == torch.__version__


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ops", "no_such_op"], "unknown op 'no_such_op'"),
        (["--shapes", "no_such_set"], "unknown shape set 'no_such_set'"),
        (["--dtypes", "int64"], "floating-point torch dtype"),
        (["--ops", "linear_cross_entropy", "--shapes", "llm"], "no selected op takes the shapes of llm"),
    ],
)
def test_main_rejects_what_it_cannot_run_before_running_anything(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        benchmarks.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
