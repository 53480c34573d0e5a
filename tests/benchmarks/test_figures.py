"""The figures generator: the performance page, the plot and the README's figures come from one run's CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import figures
from benchmarks.report import read_csv, write_csv

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "data" / "tiny.csv"
COMMITTED_CSV = ROOT / "docs" / "assets" / "benchmarks.csv"


def test_read_csv_gives_back_what_write_csv_wrote(tmp_path: Path) -> None:
    rows, environment = read_csv(FIXTURE)
    write_csv(rows, environment, tmp_path / "again.csv")
    assert read_csv(tmp_path / "again.csv") == (rows, environment)
    assert isinstance(rows[0].full_ms, float) and isinstance(rows[0].rounds, int)


def test_read_csv_refuses_rows_of_two_runs(tmp_path: Path) -> None:
    text = FIXTURE.read_text().splitlines()
    other = text[1].replace("2026-12-01T16:19:22Z", "2026-12-02T00:00:00Z")
    (tmp_path / "mixed.csv").write_text("\n".join([*text, other]) + "\n")
    with pytest.raises(ValueError, match="2 runs"):
        read_csv(tmp_path / "mixed.csv")


def test_page_names_machine_versions_and_date_from_the_csv() -> None:
    rows, environment = read_csv(FIXTURE)
    page = figures.performance_page(rows, environment, "tiny.csv")
    for fact in ("AMD EPYC (family 25, model 17)", "torch 2.13.0+cpu", "Python 3.11.7", "2026-12-01", "avx512"):
        assert fact in page
    assert "python -m benchmarks.figures tiny.csv" in page
    assert "(assets/speedups.png)" in page


def test_every_case_is_on_the_page_with_its_numbers() -> None:
    rows, environment = read_csv(FIXTURE)
    page = figures.performance_page(rows, environment, "tiny.csv")
    crossent = next(row for row in rows if row.op == "kl_div" and row.dtype == "float32" and row.impl == "crossent")
    torch_row = next(row for row in rows if row.op == "kl_div" and row.dtype == "float32" and row.impl == "torch")
    line = next(line for line in figures.summary_table(rows) if line.startswith("| `kl_div` | 67x101 | float32"))
    assert figures.milliseconds(torch_row.full_ms) in line and figures.milliseconds(crossent.full_ms) in line
    assert figures.ratio(crossent.full_speedup) in line
    assert line in page
    assert len(figures.full_table(rows)) == 2 + len(rows)  # header, rule, one line per row


def test_readme_block_holds_the_headline_cases_in_order() -> None:
    rows, environment = read_csv(FIXTURE)
    block = figures.readme_block(rows, environment)
    assert block.startswith(figures.START) and block.endswith(figures.END)
    ops = [line.split("`")[1] for line in block.splitlines() if line.startswith("| `")]
    assert ops == ["cross_entropy", "cross_entropy", "kl_div", "kl_div", "linear_cross_entropy", "linear_cross_entropy"]
    assert "AMD EPYC" in block


def test_readme_block_is_replaced_between_the_markers_only() -> None:
    readme = f"intro\n{figures.START}\nold\n{figures.END}\noutro\n"
    assert figures.with_readme_block(readme, "NEW") == "intro\nNEW\noutro\n"
    with pytest.raises(ValueError, match="figures:start"):
        figures.with_readme_block("no markers", "NEW")


def test_main_writes_page_plot_and_readme_then_check_passes(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "performance.md").write_text("stale\n")
    (tmp_path / "README.md").write_text(f"# x\n{figures.START}\n{figures.END}\n")
    assert figures.main([str(FIXTURE), "--root", str(tmp_path), "--check"]) == 1
    assert figures.main([str(FIXTURE), "--root", str(tmp_path)]) == 0
    assert (tmp_path / "docs" / "assets" / "speedups.png").read_bytes().startswith(b"\x89PNG")
    assert "kl_div" in (tmp_path / "README.md").read_text()
    assert figures.main([str(FIXTURE), "--root", str(tmp_path), "--check"]) == 0


def test_committed_page_and_readme_are_what_the_committed_csv_gives() -> None:
    """Regenerate with ``python -m benchmarks.figures docs/assets/benchmarks.csv`` after a new run."""
    rows, environment = read_csv(COMMITTED_CSV)
    page = figures.performance_page(rows, environment, "docs/assets/benchmarks.csv")
    assert (ROOT / "docs" / "performance.md").read_text() == page
    readme = (ROOT / "README.md").read_text()
    assert figures.with_readme_block(readme, figures.readme_block(rows, environment)) == readme
    assert (ROOT / "docs" / "assets" / "speedups.png").read_bytes().startswith(b"\x89PNG")
