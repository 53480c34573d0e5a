"""``crossent explain --loss focal``: the focal loss next to cross-entropy, with crossent's own numbers."""

from __future__ import annotations

import re

import pytest
import torch

import crossent

LOGITS = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]], dtype=torch.float64)  # the worked example
TARGETS = torch.tensor([0, 1, 1])


def _rows(out: str) -> list[list[str]]:
    """The cells of each body row of the first table printed."""
    table = out[out.index("┏") : out.index("└")]
    return [
        [cell.strip() for cell in line.strip("│").split("│")] for line in table.splitlines() if line.startswith("│")
    ]


def _reduced(out: str, who: str) -> str:
    line = next(line for line in out.splitlines() if line.startswith(f"│ {who}"))
    return line.strip("│").split("│")[-1].strip()


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_focal_shows_crossents_numbers_for_the_worked_example(cli, gamma: float) -> None:
    result = cli("explain", "--loss", "focal", "--gamma", f"{gamma:g}")
    assert result.code == 0, result.err
    ce = crossent.cross_entropy(LOGITS, TARGETS, reduction="none")
    focal = crossent.focal_loss(LOGITS, TARGETS, gamma=gamma, reduction="none")
    rows = _rows(result.out)
    assert len(rows) == 3
    for n, row in enumerate(rows):
        _, y, p_t, ce_n, factor, focal_n, ce_share, focal_share = row
        assert y == str(int(TARGETS[n]))
        assert p_t == f"{torch.softmax(LOGITS, 1)[n, TARGETS[n]].item():.4f}"
        assert ce_n == f"{ce[n].item():.4f}"
        assert focal_n == f"{focal[n].item():.4f}"
        assert factor == f"{(focal[n] / ce[n]).item():.4f}"
        assert ce_share == f"{100 * (ce[n] / ce.sum()).item():.1f}%"
        assert focal_share == f"{100 * (focal[n] / focal.sum()).item():.1f}%"
    # the easy samples (1 and 2, p_t = 0.88) take a smaller share of the focal loss than of cross-entropy
    assert float(rows[1][7].rstrip("%")) < float(rows[1][6].rstrip("%"))
    assert _reduced(result.out, "crossent.cross_entropy") == f"{crossent.cross_entropy(LOGITS, TARGETS).item():.10f}"
    expected = crossent.focal_loss(LOGITS, TARGETS, gamma=gamma).item()
    assert _reduced(result.out, "crossent.focal_loss") == f"{expected:.10f}"
    assert result.err == ""


def test_default_gamma_is_two_and_default_loss_is_cross_entropy(cli) -> None:
    focal = cli("explain", "--loss", "focal").out
    assert "gamma=2" in focal
    assert _reduced(focal, "crossent.focal_loss") == f"{crossent.focal_loss(LOGITS, TARGETS, gamma=2.0).item():.10f}"
    assert cli("explain").out == cli("explain", "--loss", "cross_entropy").out


def test_gamma_zero_is_cross_entropy(cli) -> None:
    result = cli("explain", "--loss", "focal", "--gamma", "0", "--reduction", "sum")
    assert result.code == 0, result.err
    for _, _, _, ce_n, factor, focal_n, ce_share, focal_share in _rows(result.out):
        assert factor == "1.0000"
        assert focal_n == ce_n and focal_share == ce_share
    assert _reduced(result.out, "crossent.focal_loss") == _reduced(result.out, "crossent.cross_entropy")
    assert "γ = 0" in result.out and "cross-entropy" in result.out.splitlines()[-1]


def test_focal_with_weights_smoothing_and_ignored_samples(cli) -> None:
    x = torch.tensor([[1.0, 2.0, 0.0], [0.0, 5.0, 1.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 1, 0])
    options = {"weight": torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64), "ignore_index": 1, "label_smoothing": 0.1}
    result = cli(
        "explain",
        "--loss",
        "focal",
        "--logits",
        "[[1,2,0],[0,5,1],[3,0,0]]",
        "--targets",
        "[2,1,0]",
        "--weight",
        "[1,2,1]",
        "--ignore-index",
        "1",
        "--label-smoothing",
        "0.1",
    )
    assert result.code == 0, result.err
    rows = _rows(result.out)
    assert rows[1][1] == "1 (ignored)"
    focal = crossent.focal_loss(x, y, gamma=2.0, reduction="none", **options)
    assert [rows[0][5], rows[2][5]] == [f"{focal[0].item():.4f}", f"{focal[2].item():.4f}"]
    assert _reduced(result.out, "crossent.focal_loss") == f"{crossent.focal_loss(x, y, **options).item():.10f}"


def test_rows_limits_the_focal_table(cli) -> None:
    result = cli("explain", "--loss", "focal", "--rows", "2")
    assert len(_rows(result.out)) == 2
    assert "1 more rows are left out; --rows all shows every one" in result.out


@pytest.mark.parametrize("gamma", ["-1", "-0.5", "nan", "inf", "two"])
def test_bad_gamma_is_an_argparse_error(cli, gamma: str) -> None:
    result = cli("explain", "--loss", "focal", "--gamma", gamma)
    assert result.code == 2 and result.out == ""
    assert f"error: argument --gamma: must be a finite number >= 0, got {gamma}" in result.err


def test_negative_gamma_message_names_gamma(module_cli) -> None:
    result = module_cli("explain", "--loss", "focal", "--gamma", "-1")
    assert result.code == 2
    assert "argument --gamma: must be a finite number >= 0, got -1" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--gamma", "1"], "--gamma applies to the focal loss: add --loss focal"),
        (["--loss", "focal", "--binary"], "not --binary"),
        (["--loss", "focal", "--targets", "[[0.9,0.1],[0.2,0.8],[0,1]]"], "needs class-index targets"),
        (["--loss", "focal", "--logits", "[[1,2]]", "--targets", "[5]"], "out of bounds"),
    ],
)
def test_focal_options_that_do_not_fit_are_one_line_exit_two(cli, options: list[str], message: str) -> None:
    line = cli("explain", *options).one_line_error()
    assert line.startswith("crossent explain: error: ")
    assert message in line


def test_help_mentions_loss_and_gamma(cli) -> None:
    result = cli("explain", "--help")
    assert result.code == 0
    out = result.out
    assert "--loss {cross_entropy,focal}" in out
    assert re.search(r"--gamma G\s+focusing exponent", out)
    assert "crossent explain --loss focal --gamma 2" in out
