"""``crossent bench`` runs the benchmark harness through its Python API: table, CSV and a ratio plot."""

from __future__ import annotations

import csv

import pytest
import torch

from crossent.cli import bench

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--shapes", "tiny", "--ops", "cross_entropy", "--dtypes", "float32", "--rounds", "1", "--no-memory"]


def test_bench_lists_the_harness_cases(cli) -> None:
    result = cli("bench", "--list")
    assert result.code == 0, result.err
    assert "cross_entropy" in result.out and "tiny" in result.out


def test_bench_on_a_tiny_shape_set_prints_table_writes_csv_and_plot(cli, tmp_path) -> None:
    table, plot = tmp_path / "results.csv", tmp_path / "ratios.png"
    result = cli("bench", *TINY, "--out", str(table), "--plot", str(plot))
    assert result.code == 0, result.err
    assert "crossent against torch" in result.out and "67x101" in result.out
    with open(table, newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["impl"] for row in rows} >= {"torch", "crossent"}
    assert plot.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ops", "no_such_op", "--shapes", "tiny"], "no_such_op"),
        (["--shapes", "no_such_set"], "no_such_set"),
        ([*TINY, "--no-csv", "--plot", "ratios.svg"], "ending in .png"),
    ],
)
def test_bad_bench_options_are_one_line_exit_two(cli, argv: list[str], message: str) -> None:
    assert message in cli("bench", *argv).one_line_error()


def test_bench_outside_a_checkout_says_where_to_run_it(cli, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "_SOURCE_ROOT", tmp_path)
    assert "root of a crossent checkout" in cli("bench", "--list").one_line_error()


# where an output may not be written: (command-line options, file named in the error, what it says)
UNWRITABLE_OUTPUTS = {
    "CSV in a missing folder": (["--out", "{t}/no/such/dir/x.csv"], "{t}/no/such/dir/x.csv: no such folder"),
    "CSV onto a folder": (["--out", "{t}"], "{t}: it is a folder"),
    "plot in a missing folder": (["--no-csv", "--plot", "{t}/no/such/dir/x.png"], "{t}/no/such/dir/x.png: no such"),
}


@pytest.mark.parametrize("argv, message", UNWRITABLE_OUTPUTS.values(), ids=UNWRITABLE_OUTPUTS.keys())
def test_bench_refuses_unwritable_outputs_before_running(cli, tmp_path, argv, message) -> None:
    line = cli("bench", *TINY, *(a.format(t=tmp_path) for a in argv)).one_line_error()
    assert f"cannot write {message.format(t=tmp_path)}" in line
    assert not (tmp_path / "no").exists()  # no folder was created on the way


def test_demo_refuses_a_plot_in_a_missing_folder_before_training(cli, tmp_path) -> None:
    line = cli("demo", "--steps", "1", "--out", str(tmp_path / "no" / "curves.png")).one_line_error()
    assert f"cannot write {tmp_path}/no/curves.png: no such folder" in line
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
@pytest.mark.parametrize("command", ["bench", "demo"])
def test_device_without_cuda_is_one_line_exit_two(cli, monkeypatch, command, device) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    options = TINY if command == "bench" else ["--steps", "1"]
    line = cli(command, *options, "--device", device).one_line_error()
    assert f"--device {device}: torch {torch.__version__} finds no CUDA device here; use --device cpu" in line


def test_bench_names_a_device_it_does_not_know(cli) -> None:
    assert "--device nonsense" in cli("bench", *TINY, "--device", "nonsense").one_line_error()
