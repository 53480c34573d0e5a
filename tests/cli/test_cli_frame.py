"""The command frame: parsing, exit codes, the missing-extra message, and ``python -m crossent``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from crossent import _dispatch
from crossent.cli.env import backend_label


def test_help_exits_zero(cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("demo", "explain", "eval", "bench", "env"):
        assert command in result.out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["eval"], ["eval", "--bins", "0", "a.npy", "b.npy"]])
def test_usage_errors_exit_two(cli, argv: list[str]) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert "usage: crossent" in result.err


def test_missing_cli_extra_is_one_line_and_exit_two(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # importlib.util.find_spec now reports it absent
    line = cli("env").one_line_error()
    assert "pip install crossent[cli]" in line
    assert "rich" in line


def test_backends_are_named_as_crossent_s_own() -> None:
    assert backend_label("torch (no native kernel for linear_cross_entropy)") == (
        "crossent (PyTorch ops): no native kernel for linear_cross_entropy"
    )
    assert backend_label("native (avx512)") == "crossent native (avx512)"
    assert backend_label("triton") == "crossent Triton"
    assert backend_label("torch") == "crossent (PyTorch ops)"


def test_env_table_says_crossent_not_torch(cli) -> None:
    out = cli("env").out
    assert "crossent (PyTorch ops)" in out or "crossent native" in out
    table = out[out.index('impl="auto" resolves to') :]
    assert "│ torch" not in table


@pytest.mark.parametrize("argv", [["env"], ["explain"], ["explain", "--binary"]])
def test_commands_that_draw_nothing_run_without_matplotlib(cli, monkeypatch: pytest.MonkeyPatch, argv) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec reports it absent, importing it fails
    result = cli(*argv)
    assert result.code == 0, result.err


def test_a_plot_without_matplotlib_asks_for_the_cli_extra(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = cli("demo", "--steps", "1").one_line_error()
    assert "matplotlib" in line and "pip install crossent[cli]" in line


def test_library_import_does_not_need_the_cli_extra() -> None:
    code = "import sys, crossent, crossent.cli; print(sorted(m for m in ('rich', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_env_table_names_every_op(cli) -> None:
    result = cli("env")
    assert result.code == 0
    for op in _dispatch.OPS:
        assert op in result.out
    assert torch.__version__ in result.out


def test_env_json_matches_dispatch(cli) -> None:
    result = cli("env", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    assert info["versions"]["torch"] == torch.__version__
    assert "cpu" in info["devices"]
    assert info["auto"]["cpu"] == _dispatch.explain(torch.device("cpu"))  # the impl= names, for scripts
    assert info["triton_importable"] == (_dispatch.triton_status() is None)


def test_options_of_one_command_are_not_taken_by_another(cli) -> None:
    result = cli("env", "--shapes", "tiny")
    assert result.code == 2
    assert "unrecognized arguments: --shapes tiny" in result.err
