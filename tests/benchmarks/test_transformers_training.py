"""``python -m benchmarks.transformers_training`` runs and prints one row per loss, the same first loss in each."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("transformers", minversion="4.50")

from benchmarks import transformers_training  # noqa: E402


def test_prints_a_row_per_loss(capsys):
    transformers_training.main(["--vocab", "300", "--hidden", "64", "--layers", "1", "--length", "16", "--steps", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\| (transformers|crossent)", line)]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list(transformers_training.LOSSES)
    first_losses = {float(row.split(" | ")[-1].strip(" |")) for row in rows}
    assert max(first_losses) - min(first_losses) < 1e-4
