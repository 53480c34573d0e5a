"""``crossent bench`` hands its options to the benchmark harness and runs it."""

from __future__ import annotations


def test_bench_lists_the_harness_cases(cli) -> None:
    result = cli("bench", "--list")
    assert result.code == 0, result.err
    assert "cross_entropy" in result.out and "tiny" in result.out


def test_bench_runs_on_a_tiny_shape_set(cli) -> None:
    argv = ["--shapes", "tiny", "--ops", "cross_entropy", "--dtypes", "float32", "--rounds", "1", "--no-csv"]
    result = cli("bench", *argv)
    assert result.code == 0, result.err
    assert "crossent against torch" in result.out
    assert "67x101" in result.out


def test_options_of_other_commands_are_still_checked(cli) -> None:
    result = cli("env", "--shapes", "tiny")
    assert result.code == 2
    assert "unrecognized arguments: --shapes tiny" in result.err
