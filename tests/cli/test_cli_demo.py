"""``crossent demo``: a short run writes the table and a PNG; its parts behave as the table claims."""

from __future__ import annotations

import pytest
import torch

from crossent.cli._corpus import tokenize
from crossent.cli._memory import peak_bytes
from crossent.cli.demo import Batches, fused_loss, naive_loss, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXT = "the cat sat on the mat . the dog sat on the log . " * 40


def test_short_demo_prints_results_and_writes_png(cli, tmp_path) -> None:
    plot = tmp_path / "demo.png"
    result = cli("demo", "--steps", "3", "--batch", "64", "--vocab", "300", "--out", str(plot))
    assert result.code == 0, result.err
    for words in ("crossent.linear_cross_entropy", "torch F.cross_entropy(h @ W.T)", "peak memory", "differ by"):
        assert words in result.out
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert plot.stat().st_size > 10_000


def test_demo_trains_on_the_users_text(cli, tmp_path) -> None:
    text = tmp_path / "story.txt"
    text.write_text(TEXT)
    result = cli("demo", "--text", str(text), "--steps", "2", "--batch", "16", "--out", str(tmp_path / "d.png"))
    assert result.code == 0, result.err
    assert str(text) in result.out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--text", "no/such/file.txt"], "--text no/such/file.txt"),
        (["--out", "curves.pdf"], "ending in .png"),
        (["--vocab", "1"], "at least 2"),
        (["--device", "nonsense"], "--device nonsense"),
    ],
)
def test_bad_options_are_one_line_exit_two(cli, argv: list[str], message: str) -> None:
    line = cli("demo", "--steps", "1", *argv).one_line_error()
    assert message in line


def test_too_short_text_is_refused(cli, tmp_path) -> None:
    text = tmp_path / "short.txt"
    text.write_text("too short")
    assert "needs at least" in cli("demo", "--text", str(text)).one_line_error()


def test_runs_differ_only_in_the_loss_step() -> None:
    corpus = tokenize("text", TEXT, vocabulary_size=64, min_tokens=6)
    batches = Batches.of(corpus, size=32, steps=4, seed=3, device=torch.device("cpu"))
    ignore = lambda *_: None  # noqa: E731

    naive = train(len(corpus.vocabulary), batches, naive_loss, report=ignore)
    again = train(len(corpus.vocabulary), batches, naive_loss, report=ignore)
    fused = train(len(corpus.vocabulary), batches, fused_loss, report=ignore)
    assert naive.losses == again.losses  # same seed, same batches: the same run
    assert fused.losses == pytest.approx(naive.losses, rel=1e-5)
    assert naive.loss_step_bytes > 0 and fused.loss_step_bytes > 0


def test_peak_bytes_counts_new_storage_not_views_or_inputs() -> None:
    x = torch.zeros(1000)
    assert peak_bytes(lambda: x.view(10, 100).t()) == 0
    assert peak_bytes(lambda: x.add_(1)) == 0
    assert peak_bytes(lambda: torch.ones(256, dtype=torch.float64)) == 256 * 8

    def two_temporaries_one_at_a_time() -> None:
        for _ in range(2):
            (x * 2).sum()

    assert peak_bytes(two_temporaries_one_at_a_time) == 1000 * 4 + 4  # the product, then its 0-d sum
