"""``crossent explain``: the numbers shown are torch's, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from crossent.cli._parser import build_parser
from crossent.cli.explain import explain, problem_from_args

LOGITS = [[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]]


def _torch_ce(logits, targets, **options) -> torch.Tensor:
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(targets, dtype=torch.float64 if np.ndim(targets) == x.dim() else torch.int64)
    kwargs = {k: torch.tensor(v, dtype=torch.float64) if k == "weight" else v for k, v in options.items()}
    return torch.nn.CrossEntropyLoss(**kwargs)(x, y)


def _torch_bce(inputs, targets, logits: bool, **options) -> torch.Tensor:
    x = torch.tensor(inputs, dtype=torch.float64)
    y = torch.tensor(targets, dtype=torch.float64)
    kwargs = {
        k: torch.tensor(v, dtype=torch.float64) if k in ("weight", "pos_weight") else v for k, v in options.items()
    }
    module = torch.nn.BCEWithLogitsLoss(**kwargs) if logits else torch.nn.BCELoss(**kwargs)
    return module(x, y)


# (command-line options, torch's result for them)
CASES = {
    "seed example": ([], _torch_ce(LOGITS, [0, 1, 1])),
    "weights, sum": (
        ["--weight", "[1, 2]", "--reduction", "sum"],
        _torch_ce(LOGITS, [0, 1, 1], weight=[1, 2], reduction="sum"),
    ),
    "weights, ignore, smoothing": (
        [
            "--logits",
            "[[1,2,0],[1,3,-1],[1,3,2],[0,5,1]]",
            "--targets",
            "[0,1,2,1]",
            "--weight",
            "[1,2,0.5]",
            "--ignore-index",
            "1",
            "--label-smoothing",
            "0.1",
        ],
        _torch_ce(
            [[1, 2, 0], [1, 3, -1], [1, 3, 2], [0, 5, 1]],
            [0, 1, 2, 1],
            weight=[1, 2, 0.5],
            ignore_index=1,
            label_smoothing=0.1,
        ),
    ),
    "none": (["--reduction", "none"], _torch_ce(LOGITS, [0, 1, 1], reduction="none")),
    "probability targets on the seed logits, weights": (
        ["--targets", "[[0.9,0.1],[0.2,0.8],[0,1]]", "--weight", "[1,3]"],
        _torch_ce(LOGITS, [[0.9, 0.1], [0.2, 0.8], [0, 1]], weight=[1, 3]),
    ),
    "probability targets, smoothing, none": (
        [
            "--logits",
            json.dumps(LOGITS),
            "--targets",
            "[[0.9,0.1],[0.2,0.8],[0,1]]",
            "--label-smoothing",
            "0.2",
            "--reduction",
            "none",
        ],
        _torch_ce(LOGITS, [[0.9, 0.1], [0.2, 0.8], [0, 1]], label_smoothing=0.2, reduction="none"),
    ),
    "unbatched": (
        ["--logits", "[1,2,3]", "--targets", "2", "--reduction", "none"],
        _torch_ce([1, 2, 3], 2, reduction="none"),
    ),
    "all ignored is nan": (
        ["--ignore-index", "1", "--targets", "[1,1,1]", "--logits", json.dumps(LOGITS)],
        _torch_ce(LOGITS, [1, 1, 1], ignore_index=1),
    ),
    "-inf logit on the target": (
        ["--logits", "[[0,-Infinity,1]]", "--targets", "[1]"],
        _torch_ce([[0, -np.inf, 1]], [1]),
    ),
    "binary logits, pos_weight": (
        ["--binary", "--pos-weight", "3", "--weight", "[[1],[2],[1]]"],
        _torch_bce([[0.8], [-1.2], [0.1]], [[1], [0], [1]], True, pos_weight=3.0, weight=[[1], [2], [1]]),
    ),
    "binary logits, large": (
        ["--binary", "--logits", "[40,-40,0]", "--targets", "[0,1,0.5]", "--reduction", "none"],
        _torch_bce([40, -40, 0], [0, 1, 0.5], True, reduction="none"),
    ),
    "binary logits, 2-D, none": (
        ["--binary", "--logits", "[[1,2],[-1,0.5]]", "--targets", "[[1,0],[0,1]]", "--reduction", "none"],
        _torch_bce([[1, 2], [-1, 0.5]], [[1, 0], [0, 1]], True, reduction="none"),
    ),
    "binary probabilities, clamped log": (
        ["--binary", "probabilities", "--logits", "[0.7,0,1]", "--targets", "[1,1,1]", "--reduction", "sum"],
        _torch_bce([0.7, 0, 1], [1, 1, 1], False, reduction="sum"),
    ),
}


def _printed(value: torch.Tensor) -> str:
    return ", ".join(
        "nan" if np.isnan(v) else "inf" if np.isposinf(v) else f"{v:.10f}" for v in value.numpy().reshape(-1)
    )


@pytest.mark.parametrize("options, expected", CASES.values(), ids=CASES.keys())
def test_explain_shows_torchs_number(cli, options: list[str], expected: torch.Tensor) -> None:
    result = cli("explain", *options)
    assert result.code == 0, result.err
    assert "all four agree" in result.out
    confirmation = result.out[result.out.index("Confirmation") :]
    rows = [line for line in confirmation.splitlines() if re.match(r"│ (the steps|crossent|torch)", line)]
    assert len(rows) == 4
    for row in rows:
        assert _printed(expected) in row


@pytest.mark.parametrize("options, expected", CASES.values(), ids=CASES.keys())
def test_explain_values_equal_torch_in_float64(options: list[str], expected: torch.Tensor) -> None:
    explanation, ours, theirs = explain(problem_from_args(build_parser().parse_args(["explain", *options])))
    for value in (explanation.by_hand, explanation.reference, ours.numpy()):
        np.testing.assert_allclose(value, expected.numpy(), rtol=1e-13, atol=0, equal_nan=True)
    torch.testing.assert_close(theirs, expected, rtol=0, atol=0, equal_nan=True)


def test_seed_example_steps_match_the_tutorial(cli) -> None:
    out = cli("explain").out
    # the tutorial's first sample: −x[0] + log(e¹ + e²) = 1.3133; softmax of [1, 3] is [0.1192, 0.8808]
    assert "2.3133" in out and "1.3133" in out
    assert "0.1192" in out and "0.8808" in out
    assert "Σ ℓ_n / number of samples" in out


def test_weighted_mean_names_its_divisor(cli) -> None:
    out = cli("explain", "--weight", "[1,2]").out
    assert "Σ w[y[n]] over kept samples" in out
    assert "/ 5 =" in out  # w[0] + w[1] + w[1] = 1 + 2 + 2


def test_logits_and_targets_from_files(cli, tmp_path) -> None:
    np.save(tmp_path / "logits.npy", np.array(LOGITS))
    (tmp_path / "targets.json").write_text("[0, 1, 1]")
    np.savetxt(tmp_path / "weight.csv", np.array([[1.0, 2.0]]), delimiter=",")
    result = cli(
        "explain",
        "--logits",
        str(tmp_path / "logits.npy"),
        "--targets",
        str(tmp_path / "targets.json"),
        "--weight",
        str(tmp_path / "weight.csv"),
    )
    assert result.code == 0, result.err
    assert _printed(_torch_ce(LOGITS, [0, 1, 1], weight=[1, 2])) in result.out


BAD = {
    "target out of range": (["--logits", "[[1,2]]", "--targets", "[5]"], "Target 5 is out of bounds"),
    "fractional target": (["--logits", "[[1,2]]", "--targets", "[0.5]"], "whole numbers"),
    "not JSON": (["--logits", "foo", "--targets", "[0]"], "neither JSON nor an existing file"),
    "ragged": (["--logits", "[[1,2],[3]]", "--targets", "[0,0]"], "not a rectangular array"),
    "smoothing above one": (["--label-smoothing", "2"], "label_smoothing must be between 0.0 and 1.0"),
    "logits only": (["--logits", "[[1,2]]"], "--logits needs --targets"),
    "pos-weight without binary": (["--pos-weight", "2"], "add --binary"),
    "ignore-index with binary": (["--binary", "--ignore-index", "0"], "apply to cross-entropy"),
    "probability out of range": (
        ["--binary", "probabilities", "--logits", "[1.5]", "--targets", "[1]"],
        "between 0 and 1",
    ),
    "3-D logits": (["--logits", "[[[1,2]]]", "--targets", "[[0]]"], "1-D (C,) or 2-D (N, C)"),
    "weight of wrong length": (["--weight", "[1,2,3]"], "weight"),
    "missing file": (["--logits", "nope.npy", "--targets", "[0]"], "neither JSON nor an existing file"),
}


@pytest.mark.parametrize("options, message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_exit_two(cli, options: list[str], message: str) -> None:
    line = cli("explain", *options).one_line_error()
    assert line.startswith("crossent explain: error: ")
    assert message in line


def test_python_dash_m_explain(module_cli) -> None:
    result = module_cli("explain", "--reduction", "sum")
    assert result.code == 0, result.err
    assert _printed(_torch_ce(LOGITS, [0, 1, 1], reduction="sum")) in result.out


def _write_empty_inputs(tmp_path) -> None:
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "header.csv").write_text("a,b\n\n")
    np.save(tmp_path / "no_rows.npy", np.zeros((0, 2)))


# explain options with nothing to explain, and what the error says
EMPTY_INPUTS = {
    "empty list": (["--logits", "[]", "--targets", "[]"], "--logits: nothing to explain"),
    "one empty row": (["--logits", "[[]]", "--targets", "[]"], "--logits: nothing to explain"),
    "rows of no classes": (["--logits", "[[],[]]", "--targets", "[0,0]"], "--logits: nothing to explain"),
    "binary, empty": (["--binary", "--logits", "[]", "--targets", "[]"], "--logits: nothing to explain"),
    "empty .json file": (["--logits", "{t}/empty.json", "--targets", "[0]"], "--logits: {t}/empty.json is empty"),
    "empty .npy file": (["--logits", "{t}/empty.npy", "--targets", "[0]"], "--logits: {t}/empty.npy is empty"),
    "CSV of a header only": (["--logits", "{t}/header.csv", "--targets", "[0]"], "header.csv holds no values"),
    "array of no rows": (["--logits", "{t}/no_rows.npy", "--targets", "[]"], "no_rows.npy holds no values"),
    "empty targets file": (["--targets", "{t}/empty.json"], "--targets: {t}/empty.json is empty"),
}


@pytest.mark.parametrize("options, message", EMPTY_INPUTS.values(), ids=EMPTY_INPUTS.keys())
def test_empty_input_is_one_line_exit_two(cli, tmp_path, options: list[str], message: str) -> None:
    _write_empty_inputs(tmp_path)
    line = cli("explain", *(option.format(t=tmp_path) for option in options)).one_line_error()
    assert message.format(t=tmp_path) in line, line


def _problem_options(tmp_path, kind: str, rows: int, classes: int) -> list[str]:
    """Options explaining ``rows`` samples of ``classes`` classes, read from files."""
    generator = np.random.default_rng(rows * classes)
    np.save(tmp_path / "x.npy", 3 * generator.normal(size=(rows, classes)))
    if kind == "probability targets":
        targets = generator.dirichlet(np.ones(classes), size=rows)
    elif kind == "binary":
        targets = (generator.random((rows, classes)) < 0.5).astype(np.float64)
    else:
        targets = generator.integers(0, classes, rows)
    np.save(tmp_path / "t.npy", targets)
    options = ["--logits", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "t.npy")]
    if kind == "weights and smoothing":
        options += ["--weight", json.dumps(list(range(1, classes + 1))), "--label-smoothing", "0.1"]
    if kind == "binary":
        options += ["--binary", "--pos-weight", "2", "--weight", "3"]
    return options


def _tables(out: str) -> list[list[str]]:
    """The lines of each table printed."""
    tables: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("┏"):
            tables.append([])
        if tables and line.startswith(("┏", "┃", "┡", "│", "└")):
            tables[-1].append(line)
    return tables


CLASS_KINDS = ["class targets", "weights and smoothing", "probability targets"]


@pytest.mark.parametrize("classes", [4, 5, 8, 30, 1000])
@pytest.mark.parametrize("kind", CLASS_KINDS)
def test_tables_of_many_classes_stay_readable_at_80_columns(cli, tmp_path, monkeypatch, kind, classes) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("explain", *_problem_options(tmp_path, kind, 3, classes))
    assert result.code == 0, result.err
    for table in _tables(result.out)[:-1]:  # the steps' tables; the last is the confirmation
        assert all(len(line) <= 80 for line in table), "\n".join(table)
        # one line of headings and one per sample: nothing wrapped onto a second line
        assert len(table) == 3 + 3 + 1, "\n".join(table)
        cells = [cell.strip() for line in table if line.startswith(("┃", "│")) for cell in line.strip("┃│").split("│")]
        assert not any(cell.endswith("…") and cell != "…" for cell in cells), "\n".join(table)  # none cut short
    assert f"[n,{classes - 1}]" in result.out  # the last class is shown, and the first
    assert "[n,0]" in result.out
    if classes >= 8:
        assert "left out to fit 80 columns" in result.out


@pytest.mark.parametrize("kind", [*CLASS_KINDS, "binary"])
def test_many_rows_are_summarised(cli, tmp_path, kind) -> None:
    options = _problem_options(tmp_path, kind, 500, 3)
    result = cli("explain", *options, "--reduction", "none")
    assert result.code == 0, result.err
    assert "all four agree" in result.out
    assert len(result.out.splitlines()) < 120
    samples = 500 * 3 if kind == "binary" else 500
    assert f"({samples - 10} more rows are left out; --rows all shows every one)" in result.out
    assert f"… ({samples} values)" in result.out  # the loss vector of reduction none, in the confirmation
    for table in _tables(result.out)[:-1]:
        assert len([line for line in table if line.startswith("│")]) == 10

    three = cli("explain", *options, "--rows", "3").out
    assert all(len([line for line in table if line.startswith("│")]) == 3 for table in _tables(three)[:-1])
    every = cli("explain", *options, "--rows", "all").out
    assert "more rows are left out" not in every
    assert all(len([line for line in table if line.startswith("│")]) == samples for table in _tables(every)[:-1])


def test_usage_text_speaks_of_the_example_not_of_where_it_came_from(cli) -> None:
    out = cli("explain", "--help").out
    assert "the worked example" in out
    assert "seed" not in out
