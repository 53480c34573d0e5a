"""``python -m benchmarks.figures RUN.csv``: the performance page, its plot and the README's figures, from one run.

Everything is read from the CSV that ``python -m benchmarks`` wrote: the numbers, and the machine,
versions, commit and date they were measured with. Nothing is typed in by hand, so regenerating from
a new run updates every figure at once::

    python -m benchmarks --shapes llm,lce --dtypes float32,bfloat16 --out docs/assets/benchmarks.csv
    python -m benchmarks.figures docs/assets/benchmarks.csv

writes ``docs/performance.md``, ``docs/assets/speedups.png`` and the block of README.md between
``<!-- figures:start -->`` and ``<!-- figures:end -->``. ``--check`` writes nothing and exits with 1
when a page or the README block differs from what the CSV gives.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .environment import Environment
from .paths import ROOT
from .report import environment_line, read_csv
from .runner import Row

START, END = "<!-- figures:start -->", "<!-- figures:end -->"
# The cases the README shows, in this order (every dtype the run has); the page shows every case.
HEADLINE_OPS: tuple[str, ...] = (
    "cross_entropy",
    "cross_entropy:label_smoothing",
    "log_softmax",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "focal_loss",
    "linear_cross_entropy",
)
PAGE, PLOT, README = Path("docs/performance.md"), Path("docs/assets/speedups.png"), Path("README.md")


def cases(rows: Sequence[Row]) -> list[list[Row]]:
    """The run's rows grouped by case (op, shape, dtype), in run order; each case's first row is its reference."""
    grouped: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        grouped.setdefault((row.op, row.shape, row.dtype), []).append(row)
    return list(grouped.values())


def _crossent(case: Sequence[Row]) -> Row | None:
    return next((row for row in case if row.impl == "crossent"), None)


def milliseconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def mebibytes(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def error(value: float | None) -> str:
    return "–" if value is None else f"{value:.1e}"


def machine_line(environment: Environment) -> str:
    """Where and with what the figures were measured, and when (the date of the run)."""
    return f"Measured on {environment_line(environment)}."


def summary_table(rows: Sequence[Row], ops: Sequence[str] | None = None) -> list[str]:
    """One line per case: crossent's forward+backward time and peak memory against the case's reference."""
    lines = [
        "| op | shape | dtype | against | its fwd+bwd ms | crossent fwd+bwd ms | speedup "
        "| its peak MiB | crossent peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    chosen = cases(rows)
    if ops is not None:
        chosen = sorted((case for case in chosen if case[0].op in ops), key=lambda case: ops.index(case[0].op))
    for case in chosen:
        reference, ours = case[0], _crossent(case)
        if ours is None or ours is reference:
            continue
        speedup = ratio(ours.full_speedup)
        if ours.full_speedup is not None and ours.full_speedup >= 1:
            speedup = f"**{speedup}**"  # faster than the baseline
        lines.append(
            f"| `{reference.op}` | {reference.shape} | {reference.dtype} | {reference.impl} "
            f"| {milliseconds(reference.full_ms)} | {milliseconds(ours.full_ms)} | {speedup} "
            f"| {mebibytes(reference.full_peak_mib)} | {mebibytes(ours.full_peak_mib)} |"
        )
    return lines


def full_table(rows: Sequence[Row]) -> list[str]:
    """Every row of the run: each implementation's times, ratios, peaks, errors and status."""
    lines = [
        "| op | shape | dtype | impl | fwd+bwd ms | x | no-grad ms | x | peak fwd+bwd MiB | peak no-grad MiB "
        "| value err | grad err | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        status = "" if row.status == "ok" else row.status.replace("|", "/")
        lines.append(
            f"| `{row.op}` | {row.shape} | {row.dtype} | {row.impl} | {milliseconds(row.full_ms)} "
            f"| {ratio(row.full_speedup)} | {milliseconds(row.forward_ms)} | {ratio(row.forward_speedup)} "
            f"| {mebibytes(row.full_peak_mib)} | {mebibytes(row.forward_peak_mib)} | {error(row.value_error)} "
            f"| {error(row.grad_error)} | {status} |"
        )
    return lines


def performance_page(rows: Sequence[Row], environment: Environment, csv_name: str) -> str:
    """The Markdown of ``docs/performance.md``."""
    return "\n".join(
        [
            f"<!-- Generated by `python -m benchmarks.figures {csv_name}`: edit the generator, not this page. -->",
            "",
            "# Performance",
            "",
            machine_line(environment),
            "",
            "Each case times crossent and torch side by side in one process, alternating between them; "
            "times are medians, peaks are the extra memory of one call above its inputs (in a fresh process "
            "on CPU), and errors are the largest differences from a float64 ground truth. "
            "[Benchmarks](guide/benchmarks.md) explains how the harness measures, and how to run it "
            "and regenerate this page.",
            "",
            "![crossent's forward+backward speedup over torch, per case](assets/speedups.png)",
            "",
            "## crossent against torch",
            "",
            "Forward + backward. *against* is the case's torch baseline: torch's own loss (`torch`), "
            "the same loss composed from torch ops where torch has none (`focal_loss`), or, for the fused "
            "loss, `F.cross_entropy(h @ W.T, y)` (`torch naive`). A speedup above 1 is faster than it.",
            "",
            *summary_table(rows),
            "",
            "## Every measurement",
            "",
            "*x* is the case's first baseline's median divided by this row's; *no-grad* is the forward "
            "under `torch.no_grad()`.",
            "",
            *full_table(rows),
            "",
        ]
    )


def readme_block(rows: Sequence[Row], environment: Environment) -> str:
    """The README's figures: the headline cases, their machine, and a link to the full page."""
    return "\n".join(
        [
            START,
            *summary_table(rows, HEADLINE_OPS),
            "",
            f"{machine_line(environment)} Every case, the plot and how they are measured: "
            "[docs/performance.md](docs/performance.md).",
            END,
        ]
    )


def with_readme_block(readme: str, block: str) -> str:
    """``readme`` with its figures block replaced by ``block``; ValueError when the markers are missing."""
    start, end = readme.find(START), readme.find(END)
    if start == -1 or end < start:
        raise ValueError(f"README.md has no {START} ... {END} block")
    return readme[:start] + block + readme[end + len(END) :]


def speedup_plot(rows: Sequence[Row], environment: Environment, path: Path) -> None:
    """A PNG of crossent's forward+backward speedup over each case's reference, one bar per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    shapes: dict[str, set[str]] = {}
    for row in rows:
        shapes.setdefault(row.op, set()).add(row.shape)
    bars: list[tuple[str, float]] = []
    for case in cases(rows):
        ours = _crossent(case)
        if ours is not None and ours is not case[0] and ours.full_speedup is not None:
            shape = f" {ours.shape}" if len(shapes[ours.op]) > 1 else ""
            bars.append((f"{ours.op}{shape} {ours.dtype}", ours.full_speedup))
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(bars) + 1.6))
    labels, values = [label for label, _ in bars], [value for _, value in bars]
    colors = ["tab:green" if value >= 1 else "tab:red" for value in values]
    axes.barh(labels, [value - 1.0 for value in values], left=1.0, color=colors)  # each bar from 1 to its ratio
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    low, high = min([*values, 1.0]) / 1.6, max([*values, 1.0]) * 1.6
    axes.set_xlim(low, high)
    axes.xaxis.set_major_locator(FixedLocator([2.0**k for k in range(-12, 13) if low <= 2.0**k <= high]))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.invert_yaxis()
    axes.set_xlabel("forward + backward speedup over torch (log scale; right of 1x is faster)")
    axes.set_title(f"{environment.machine}, torch {environment.torch}, {environment.timestamp[:10]}", fontsize=9)
    for index, value in enumerate(values):
        axes.text(
            value,
            index,
            f" {value:.2f}x " if value >= 1 else f"{value:.2f}x ",
            va="center",
            fontsize=8,
            ha="left" if value >= 1 else "right",
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def _shown_path(path: Path, root: Path) -> str:
    """``path`` relative to the checkout when it lies inside it (what the page names as its source)."""
    resolved, root = path.resolve(), root.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.figures",
        description="Write docs/performance.md, docs/assets/speedups.png and the README's figures from one run's CSV.",
    )
    parser.add_argument("csv", type=Path, help="the CSV of one python -m benchmarks run")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to write into (default: this one)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    try:
        rows, environment = read_csv(args.csv)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    csv_name = _shown_path(args.csv, args.root)
    page = performance_page(rows, environment, csv_name)
    readme = with_readme_block((args.root / README).read_text(), readme_block(rows, environment))
    if args.check:
        stale = [str(path) for path, text in ((PAGE, page), (README, readme)) if (args.root / path).read_text() != text]
        for path in stale:
            print(f"{path} is out of date: run python -m benchmarks.figures {csv_name}", file=sys.stderr)
        return 1 if stale else 0
    (args.root / PAGE).write_text(page)
    (args.root / README).write_text(readme)
    speedup_plot(rows, environment, args.root / PLOT)
    print(f"wrote {PAGE}, {PLOT} and the figures in {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
