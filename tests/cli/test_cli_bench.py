"""``crossent bench`` runs the benchmark harness through its Python API: table, CSV and a ratio plot."""

from __future__ import annotations

import csv

import pytest

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
