"""PNG figures of the command line, drawn with matplotlib's non-interactive Agg backend."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and nothing opens a window

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.08}
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
