"""The ``small`` shape set, batched timing of short calls, the targets and their tables.

No assertion here is about speed: the runs use one or two timed samples, and the verdicts are
checked on rows made up for the purpose.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from rich.console import Console

import benchmarks
from benchmarks.environment import Environment
from benchmarks.ops import OPS
from benchmarks.problems import class_logits
from benchmarks.report import results_table
from benchmarks.runner import MIB, Row
from benchmarks.shapes import SHAPE_SETS, LinearShape, LogitsShape
from benchmarks.steps import Steps
from benchmarks.targets import MB, TARGETS, check_targets
from benchmarks.timing import time_batch, time_in_alternation
from crossent.cli.env import cpu_model as _cpu_model

SMALL = [LogitsShape(3, 3), LogitsShape(128, 10), LogitsShape(1024, 100), LogitsShape(4096, 1000)]
LCE = LinearShape(2048, 512, 32768, 0.1)
QUICK: dict[str, Any] = {"rounds": 1, "warmup": 0, "memory": False, "min_sample_s": 0.0, "min_time_s": 0.0}
ENVIRONMENT = Environment(
    machine="Test CPU 9000 (family 1, model 2)",
    cores=2,
    threads=2,
    python="3.11",
    torch=torch.__version__,
    crossent="0.1.0",
    commit="abc",
    timestamp="2026-01-01T00:00:00Z",
    load="0.10 0.20 0.30",
)


def _render(renderable: Any) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _row(op: str, shape: str, impl: str, **figures: Any) -> Row:
    return Row(
        op=op, shape=shape, dtype="float32", device="cpu", impl=impl, status=figures.pop("status", "ok"), **figures
    )


def _timed(op: str, shape: str, torch_ms: float, crossent_ms: float | None, **crossent: Any) -> list[Row]:
    return [
        _row(op, shape, "torch", full_ms=torch_ms, full_best_ms=torch_ms, full_batch=100),
        _row(op, shape, "crossent", full_ms=crossent_ms, full_best_ms=crossent_ms, full_batch=50, **crossent),
    ]


def test_the_small_set_is_the_four_classification_shapes_and_takes_the_class_dim_ops() -> None:
    assert list(SHAPE_SETS["small"]) == SMALL

    cases = benchmarks.plan(["cross_entropy", "nll_loss", "log_softmax"], ["small"], ["float32"])

    assert [(case.op.name, case.shape) for case in cases] == [
        (op, shape) for shape in SMALL for op in ("cross_entropy", "nll_loss", "log_softmax")
    ]
    with pytest.raises(ValueError, match="no selected op takes the shapes of small"):
        benchmarks.plan(["linear_cross_entropy"], ["small"], ["float32"])


def test_every_target_names_a_case_of_a_shape_set() -> None:
    for target in TARGETS:
        assert target.op in OPS
        assert isinstance(target.shape, OPS[target.op].shape_type)
        assert any(target.shape in shapes for shapes in SHAPE_SETS.values()), target
    assert {target.shape for target in TARGETS if target.kind == "time"} == {*SMALL, *SHAPE_SETS["llm"]}
    (memory,) = [target for target in TARGETS if target.kind == "memory"]
    assert (memory.op, memory.shape, memory.bound) == ("linear_cross_entropy", LCE, 100 * MB)


def test_a_run_of_the_small_set_reports_per_call_times_batches_and_bests() -> None:
    rows = benchmarks.run(["cross_entropy", "nll_loss"], ["small"], ["float32"], **QUICK)

    assert [(row.op, row.shape, row.impl) for row in rows] == [
        (op, shape.label, impl)
        for shape in SMALL
        for op in ("cross_entropy", "nll_loss")
        for impl in ("torch", "crossent")
    ]
    for row in rows:
        if row.impl == "crossent" and row.status != "ok":  # crossent mid-rewrite: the row says why
            assert row.status.startswith(("not available: ", "error (")), row
            continue
        assert row.status == "ok", row
        assert row.rounds == 1 and row.full_batch == 1 and row.forward_batch == 1
        assert row.full_best_ms is not None and row.full_ms is not None and 0 < row.full_best_ms <= row.full_ms
        assert row.forward_best_ms is not None and 0 < row.forward_best_ms
        assert row.full_spread == 0.0


def _cross_entropy_steps(shape: LogitsShape, op: str = "cross_entropy", function: Any = None) -> Steps:
    problem = class_logits(shape, torch.float32, torch.device("cpu"), 0)
    return Steps(function or torch.nn.functional.cross_entropy, OPS[op].call, problem, intermediate_inputs=False)


def test_short_calls_are_timed_in_batches_and_sampled_until_the_minimum_time() -> None:
    problem = class_logits(LogitsShape(3, 3), torch.float32, torch.device("cpu"), 0)
    cheap = Steps(lambda input, target: input.sum(), OPS["cross_entropy"].call, problem, intermediate_inputs=False)

    timings = time_in_alternation(
        {"cheap": cheap}, "full", rounds=1, warmup=0, device=torch.device("cpu"), min_sample_s=0.02, min_time_s=0.1
    )

    assert timings.calls_per_sample["cheap"] > 1  # a sum of 9 numbers and its backward: microseconds
    assert timings.rounds >= 2  # 0.1 s of samples of about 0.02 s
    assert 0 < timings.bests["cheap"] <= timings.medians["cheap"] < 20.0  # milliseconds per call
    assert timings.spreads["cheap"] >= 0


def test_a_call_longer_than_the_minimum_sample_is_timed_alone() -> None:
    steps = {"torch": _cross_entropy_steps(LogitsShape(3, 3))}

    timings = time_in_alternation(
        steps, "forward", rounds=3, warmup=1, device=torch.device("cpu"), min_sample_s=0.0, min_time_s=0.0
    )

    assert timings.calls_per_sample == {"torch": 1} and timings.rounds == 3


def test_a_batch_drops_each_calls_gradients_instead_of_accumulating_them() -> None:
    steps = _cross_entropy_steps(LogitsShape(4, 5))
    steps.reset()
    steps.run("full")
    single = steps.gradient("input")
    assert single is not None

    time_batch(steps, "full", torch.device("cpu"), 7)

    torch.testing.assert_close(steps.gradient("input"), single)


def test_intermediate_inputs_are_fresh_for_every_call_of_a_batch() -> None:
    shape = LogitsShape(6, 4)
    seen: list[torch.Tensor] = []

    def overwriting_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(input.detach().clone())
        loss = torch.nn.functional.cross_entropy(input, target)
        with torch.no_grad():
            input.zero_()  # as an in-place backward would: the next call must not see it
        return loss

    problem = class_logits(shape, torch.float32, torch.device("cpu"), 0)
    steps = Steps(overwriting_loss, OPS["cross_entropy"].call, problem, intermediate_inputs=True)

    time_batch(steps, "full", torch.device("cpu"), 3)

    assert len(seen) == 3
    for values in seen:
        assert torch.equal(values, problem["input"].detach())
    assert steps.gradient("input") is not None and problem["input"].grad is None


def test_time_targets_go_by_the_ratio_of_the_bests_and_respect_strict_bounds() -> None:
    rows = [
        *_timed("cross_entropy", "3x3", 0.030, 0.045),  # exactly 1.5x: within
        *_timed("cross_entropy", "128x10", 0.040, 0.061),  # 1.525x: missed
        *_timed("cross_entropy", "1024x100", 0.100, 0.119),
        *_timed("cross_entropy", "4096x1000", 4.0, 4.0),  # not faster: missed
        *_timed("nll_loss", "3x3", 0.02, 0.5),  # no target of its own
    ]

    checks = check_targets(rows)

    assert [(check.target.shape.label, check.verdict) for check in checks] == [
        ("3x3", "PASS"),
        ("128x10", "MISS"),
        ("1024x100", "PASS"),
        ("4096x1000", "MISS"),
    ]
    assert checks[0].figure == pytest.approx(1.5)


def test_a_target_whose_row_was_not_measured_says_so() -> None:
    rows = [
        *_timed("cross_entropy", "3x3", 0.03, None, status="not available: crossent does not import (boom)"),
        *_timed("cross_entropy", "128x10", 0.03, 0.04),
    ]
    rows[2] = dataclasses.replace(rows[2], status="error (full): RuntimeError: x", full_ms=None, full_best_ms=None)

    checks = check_targets(rows)

    assert [(check.verdict, check.why[:20]) for check in checks] == [
        ("not measured", "not available: cross"),
        ("not measured", "torch was not timed:"),
    ]


def _lce_rows(crossent_mib: float | None) -> list[Row]:
    return [
        _row("linear_cross_entropy", LCE.label, "torch naive", full_peak_mib=780.0, forward_peak_mib=520.0),
        _row("linear_cross_entropy", LCE.label, "torch chunked", full_peak_mib=290.0, forward_peak_mib=40.0),
        _row("linear_cross_entropy", LCE.label, "crossent", full_peak_mib=crossent_mib, forward_peak_mib=17.0),
    ]


@pytest.mark.parametrize(
    ("crossent_mib", "verdict"),
    [(95.0, "PASS"), (100 * MB / MIB, "PASS"), (96.0, "MISS"), (None, "not measured")],
    ids=["under", "exactly-100MB", "over-100MB-under-100MiB", "no-memory"],
)
def test_the_memory_contract_is_100_MB_of_crossents_fwd_bwd_peak(crossent_mib: float | None, verdict: str) -> None:
    (check,) = check_targets(_lce_rows(crossent_mib))

    assert check.target.impl == "crossent" and check.verdict == verdict


def test_the_report_prints_ratio_and_memory_tables_with_verdicts_and_the_cpu_model() -> None:
    rows = [*_timed("cross_entropy", "3x3", 0.030, 0.040), *_timed("nll_loss", "3x3", 0.02, 0.5), *_lce_rows(120.0)]

    printed = _render(results_table(rows, ENVIRONMENT))

    assert "crossent against torch" in printed
    assert "crossent / torch, forward+backward time" in printed
    assert "memory contract" in printed
    words = " ".join(printed.split())  # a caption wraps at the width of its table
    assert words.count(ENVIRONMENT.machine) == 3  # every table's caption names the CPU
    assert words.count("load average 0.10 0.20 0.30") == 3
    ratio_lines = [line for line in printed.splitlines() if "3x3" in line and "crossent" in line and "µs" not in line]
    assert any("1.33x" in line and "≤ 1.50x torch" in line and "PASS" in line for line in ratio_lines), printed
    assert any("nll_loss" in line and "25.00x" in line for line in ratio_lines), printed
    crossent_memory = next(line for line in printed.splitlines() if "crossent" in line and "100 MB" in line)
    assert "120.0" in crossent_memory and "125.8" in crossent_memory and "MISS" in crossent_memory  # MiB, MB
    assert "torch chunked" in printed and "290.0" in printed


def test_the_report_is_the_main_table_alone_when_no_target_applies() -> None:
    printed = _render(results_table(_timed("cross_entropy", "67x101", 0.03, 0.04), ENVIRONMENT))

    assert "crossent against torch" in printed
    assert "forward+backward time" not in printed and "memory contract" not in printed


def test_main_on_the_small_set_prints_a_verdict_per_target(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--ops", "cross_entropy", "--shapes", "small", "--dtypes", "float32", "--rounds", "1"]
    argv += ["--min-sample-ms", "0", "--min-time-ms", "0", "--warmup", "0", "--no-memory", "--no-csv"]

    assert benchmarks.main(argv) == 0

    printed = capsys.readouterr().out
    assert "crossent / torch, forward+backward time" in printed
    for target in TARGETS:
        if target.kind == "time" and target.shape in SMALL:
            line = next(
                line for line in printed.splitlines() if f" {target.shape.label} " in line and target.label in line
            )
            assert any(verdict in line for verdict in ("PASS", "MISS", "not measured")), line
    assert _cpu_model() in printed


def test_list_names_the_small_set_and_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert benchmarks.main(["--list"]) == 0

    printed = capsys.readouterr().out
    assert "small: 3x3, 128x10, 1024x100, 4096x1000" in printed
    assert "target: cross_entropy 4096x1000 float32, crossent fwd+bwd time < 1.00x torch" in printed
    assert f"target: linear_cross_entropy {LCE.label} float32, crossent fwd+bwd peak memory ≤ 100 MB" in printed


def test_the_machine_is_cpuinfos_model_name() -> None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    except OSError:
        names = []
    if not names:
        pytest.skip("no model name in /proc/cpuinfo here")
    assert _cpu_model().startswith(names[0])
    assert benchmarks.collect_environment("cpu").machine == _cpu_model()


def test_a_caption_says_when_the_machine_was_busier_than_its_cores() -> None:
    rows = _timed("cross_entropy", "3x3", 0.030, 0.040)
    busy = dataclasses.replace(ENVIRONMENT, load="3.50 2.00 1.00")

    assert "busy" not in _render(results_table(rows, ENVIRONMENT))
    assert " ".join(_render(results_table(rows, busy)).split()).count("(busy: above its 2 cores)") == 2
