"""PNG figures of the command line, drawn with matplotlib's non-interactive Agg backend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display needed, and nothing opens a window

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from crossent.cli._errors import CLIError  # noqa: E402


def _save(figure: Figure, path: str) -> None:
    try:
        figure.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)


def reliability_diagram(result: dict, path: str) -> None:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, and how many fall in each bin."""
    bins = result["bins"]
    multilabel = result["task"] == "multilabel"
    lower = [b["lower"] for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    filled = [b for b in bins if b["count"]]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08}
    )
    top.bar(
        [b["lower"] for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        align="edge",
        color="#4878a8",
        edgecolor="white",
        label="observed" if not multilabel else "observed frequency",
    )
    top.bar(
        [b["lower"] for b in filled],
        [b["confidence"] - b["accuracy"] for b in filled],
        width=width,
        bottom=[b["accuracy"] for b in filled],
        align="edge",
        color="#e4855a",
        alpha=0.45,
        edgecolor="#c0502a",
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("fraction of labels that are on" if multilabel else "accuracy")
    top.set_title(f"Reliability diagram: ECE = {result['ece']:.4f}  ({result['samples']} samples)")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(lower, [b["count"] for b in bins], width=width, align="edge", color="#888888", edgecolor="white")
    bottom.set_xlabel(
        "predicted probability of each label" if multilabel else "confidence (probability of the top class)"
    )
    bottom.set_ylabel("predictions")
    bottom.grid(alpha=0.3)
    _save(figure, path)


def loss_curves(curves: dict[str, Sequence[float]], path: str, title: str) -> None:
    """Training loss per step for each run, and below it the absolute difference between the first two."""
    (name_a, a), (name_b, b) = list(curves.items())[:2]
    steps = range(1, len(a) + 1)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.14}
    )
    top.plot(steps, a, color="#1f77b4", linewidth=2.2, label=name_a)
    top.plot(steps, b, color="#ff7f0e", linewidth=1.2, linestyle="--", label=name_b)
    top.set_ylabel("training loss (nats per token)")
    top.set_title(title)
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    difference = [abs(x - y) for x, y in zip(a, b, strict=True)]
    bottom.plot(steps, difference, color="#555555", linewidth=1, marker=".", markersize=3, label="|difference|")
    bottom.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("training step")
    bottom.set_ylabel("|difference|")
    bottom.legend(loc="upper right")
    bottom.grid(alpha=0.3)
    _save(figure, path)


def benchmark_ratios(rows: Sequence[Any], path: str) -> None:
    """Speed and peak-memory ratios against torch, one bar per implementation and case.

    ``rows`` are ``benchmarks.Row`` records; each case's first row is the torch reference. Speed is
    torch's median time over this one's (above 1 is faster); memory is this one's peak over torch's
    (below 1 is leaner). Both axes are logarithmic, so 2x faster and 2x slower look alike.
    """
    reference: dict[tuple[str, str, str], Any] = {}
    labels, full, forward, memory = [], [], [], []
    for row in rows:
        case = (row.op, row.shape, row.dtype)
        if case not in reference:
            reference[case] = row
            continue
        base = reference[case]
        labels.append(f"{row.op}  {row.shape}  {row.dtype}  [{row.impl}]")
        full.append(row.full_speedup or math.nan)
        forward.append(row.forward_speedup or math.nan)
        peaks = (row.full_peak_mib, base.full_peak_mib)
        memory.append(peaks[0] / peaks[1] if peaks[0] is not None and peaks[1] else math.nan)
    if not labels:
        raise CLIError("no implementation besides the torch reference was measured: nothing to plot")
    y = np.arange(len(labels))
    height = 0.38
    figure, (speed, lean) = plt.subplots(
        1, 2, figsize=(12, 1.6 + 0.5 * len(labels)), sharey=True, gridspec_kw={"wspace": 0.05}
    )

    def bars(axis: Any, offset: float, ratios: list[float], size: float, **style: Any) -> None:
        # bars start at the torch line (1), so slower or leaner ones point left and faster or heavier right
        axis.barh(y + offset, [r - 1 for r in ratios], size, left=1.0, **style)

    bars(speed, -height / 2, full, height, color="#1f77b4", label="forward + backward")
    bars(speed, height / 2, forward, height, color="#8fbbd9", label="forward only")
    speed.set_xlabel("speed vs torch: torch's time / this one's (above 1 is faster)")
    bars(lean, 0.0, memory, 2 * height, color="#2ca02c", label="peak memory, forward + backward")
    lean.set_xlabel("peak memory vs torch: this one's / torch's (below 1 is leaner)")
    times = FuncFormatter(lambda value, _: f"{value:g}×")
    for axis, ratios in ((speed, full + forward), (lean, memory)):
        axis.axvline(1.0, color="black", linestyle="--", linewidth=1, label="torch")
        axis.set_xscale("log")
        measured = [r for r in ratios if r > 0] + [1.0]  # nan compares false; the torch line stays in view
        axis.set_xlim(min(measured) / 1.25, max(measured) * 1.25)
        axis.xaxis.set_major_formatter(times)
        axis.xaxis.set_minor_formatter(times)
        axis.tick_params(axis="x", which="minor", labelsize="x-small")
        axis.grid(axis="x", which="both", alpha=0.3)
        axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize="small", frameon=False)
    for index, value in enumerate(full):
        if math.isnan(value):
            speed.text(1.0, index, "  not measured: see the table", va="center", fontsize="small", color="#aa3333")
    speed.set_yticks(y, labels, fontsize="small")
    speed.set_ylim(len(labels) - 0.5, -0.5)  # first row on top, a full row of room at each end
    _save(figure, path)
