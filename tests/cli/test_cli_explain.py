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
    "binary probabilities, clamped log": (
        ["--binary", "probabilities", "--logits", "[0.7,0,1]", "--targets", "[1,1,1]", "--reduction", "sum"],
        _torch_bce([0.7, 0, 1], [1, 1, 1], False, reduction="sum"),
    ),
}


def _printed(value: torch.Tensor) -> str:
    return ", ".join(
        "nan" if np.isnan(v) else "inf" if np.isposinf(v) else f"{v:.10f}" for v in np.atleast_1d(value.numpy())
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
