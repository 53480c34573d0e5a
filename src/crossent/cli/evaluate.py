"""``crossent eval PREDICTIONS LABELS``: score saved model outputs.

Predictions and labels are streamed in chunks of rows (memory-mapped .npy/.pt, CSV a block of lines at
a time), validated chunk by chunk, and tallied by ``_metrics``. Any problem with the input (a missing
file, a wrong shape, NaN probabilities, a label out of range, a pickled object) stops the command
with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator

import numpy as np
import torch

from crossent.cli import _console
from crossent.cli._errors import CLIError
from crossent.cli._inputs import ArraySource, open_array, output_file
from crossent.cli._metrics import MulticlassTally, MultilabelTally
from crossent.cli._parser import ROW_SUM_TOLERANCE

CHUNK_BYTES = 64 * 2**20  # float64 predictions per chunk
DEFAULT_TOPK = 5
MAX_CLASS_ROWS = 20  # classes listed in the per-class table; --json lists all


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])


def _looks_like_probabilities(scores: np.ndarray, multilabel: bool) -> bool:
    """Every value in [0, 1], and for one-of-C rows every row summing to 1 within ``ROW_SUM_TOLERANCE``.

    Rows with NaN are not looked at.
    """
    scores = scores[~np.isnan(scores).any(axis=1)]
    if not scores.size or not np.all((scores >= 0) & (scores <= 1)):
        return False
    return multilabel or bool(np.all(np.abs(scores.sum(axis=1) - 1) <= ROW_SUM_TOLERANCE))


def _check_scores(scores: np.ndarray, first_row: int, probabilities: bool, multilabel: bool) -> None:
    """Raise on NaN, on probabilities outside [0, 1], and on rows of class probabilities not summing to 1."""
    nan = np.isnan(scores)
    if nan.any():
        what = "probabilities" if probabilities else "logits"
        raise CLIError(f"predictions: row {first_row + _first_bad_row(nan)} has NaN {what}")
    if not probabilities:
        if np.isposinf(scores).any():
            raise CLIError(f"predictions: row {first_row + _first_bad_row(np.isposinf(scores))} has a +inf logit")
        return
    outside = (scores < 0) | (scores > 1)
    if outside.any():
        row = _first_bad_row(outside)
        raise CLIError(
            f"predictions: row {first_row + row} has a probability outside [0, 1] "
            f"({scores[row][outside[row]].flat[0]:g}); pass --kind logits if these are logits"
        )
    if not multilabel:
        off = np.abs(scores.sum(axis=1) - 1) > ROW_SUM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise CLIError(
                f"predictions: row {first_row + row} of probabilities sums to {scores[row].sum():.6g}, "
                f"not 1 (within {ROW_SUM_TOLERANCE:g}); pass --kind logits if these are logits"
            )


def _class_labels(raw: np.ndarray, first_row: int, n_classes: int, ignore_index: int | None) -> np.ndarray:
    """(n,) or (n, 1) whole numbers -> (n,) int64; raises on fractions and labels out of range."""
    labels = raw.reshape(raw.shape[0]) if raw.ndim == 2 and raw.shape[1] == 1 else raw
    if labels.ndim != 1:
        raise CLIError(f"labels must be one class index per sample, shape (N,); got rows of shape {raw.shape[1:]}")
    if labels.dtype.kind == "f":
        fractional = ~np.isfinite(labels) | (labels != np.round(labels))
        if fractional.any():
            row = int(np.flatnonzero(fractional)[0])
            raise CLIError(f"labels: row {first_row + row} is {labels[row]:g}, not a class index")
    labels = labels.astype(np.int64)
    kept = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, dtype=bool)
    outside = kept & ((labels < 0) | (labels >= n_classes))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise CLIError(
            f"labels: row {first_row + row} is {labels[row]}, out of range for {n_classes} classes "
            f"(0 to {n_classes - 1})"
        )
    return labels


def _binary_labels(raw: np.ndarray, first_row: int, columns: int) -> np.ndarray:
    labels = raw.reshape(raw.shape[0], -1)
    if labels.shape[1] != columns:
        raise CLIError(
            f"--multilabel needs labels shaped like the predictions: {columns} per row, got {labels.shape[1]}"
        )
    not_binary = (labels != 0) & (labels != 1)
    if not_binary.any():
        row = _first_bad_row(not_binary)
        raise CLIError(
            f"labels: row {first_row + row} has {labels[row][not_binary[row]].flat[0]:g}; multi-label labels are 0 or 1"
        )
    return labels.astype(np.float64)


def _paired_chunks(
    predictions: ArraySource, labels: ArraySource, rows: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, predictions rows, the same rows' labels), until both files end together.

    The two files may come in chunks of different sizes (a CSV's blank lines), so rows are paired
    one by one, not chunk by chunk.
    """
    pending_scores, pending_labels = iter(predictions.chunks(rows)), iter(labels.chunks(rows))
    scores: np.ndarray | None = None
    raw: np.ndarray | None = None
    first_row = 0
    while True:
        if scores is None or not len(scores):
            scores = next(pending_scores, None)
        if raw is None or not len(raw):
            raw = next(pending_labels, None)
        if scores is None or raw is None:
            if scores is None and raw is None:
                return
            shorter = "predictions" if scores is None else "labels"
            raise CLIError(f"predictions and labels have different numbers of rows ({shorter} end after {first_row})")
        paired = min(len(scores), len(raw))
        yield first_row, scores[:paired], raw[:paired]
        scores, raw, first_row = scores[paired:], raw[paired:], first_row + paired


def _check_shapes(predictions: ArraySource, labels: ArraySource, multilabel: bool) -> int:
    """Values per prediction row (C); raises on shapes that cannot be scored."""
    for source in (predictions, labels):
        if source.shape == ():
            raise CLIError(f"{source.name} holds a single number (a 0-d array), not one row per sample")
    shape = predictions.shape
    if shape is not None:
        if shape[0] == 0:
            raise CLIError(f"{predictions.name} holds no samples")
        if multilabel and len(shape) not in (1, 2):
            raise CLIError(f"--multilabel predictions must be (N,) or (N, L); got shape {shape}")
        if not multilabel and len(shape) != 2:
            raise CLIError(f"predictions must be 2-D (samples, classes); got shape {shape}")
        if labels.shape is not None and labels.shape[0] != shape[0]:
            raise CLIError(f"predictions have {shape[0]} rows but labels have {labels.shape[0]}")
    if predictions.row_size == 0:
        raise CLIError(f"{predictions.name} holds no values")
    if not multilabel and predictions.row_size < 2:
        raise CLIError("predictions have one column; score a single binary output with --multilabel")
    return predictions.row_size


def _tally(args: argparse.Namespace) -> dict[str, object]:
    predictions, labels = open_array(args.predictions), open_array(args.labels)
    columns = _check_shapes(predictions, labels, args.multilabel)
    rows = args.chunk_rows or max(1, CHUNK_BYTES // (8 * columns))
    tally: MulticlassTally | MultilabelTally
    if args.multilabel:
        tally = MultilabelTally(columns, args.bins)
    else:
        topk = args.topk if args.topk is not None else ([DEFAULT_TOPK] if columns > DEFAULT_TOPK else [])
        tally = MulticlassTally(columns, sorted(set(topk)), args.bins)
    kind = None if args.kind == "auto" else args.kind
    ignored = 0
    with _console.progress(transient=True, counter=False) as bar:
        task = bar.add_task(f"scoring {predictions.name}", total=predictions.extent)
        for first_row, raw_scores, raw_labels in _paired_chunks(predictions, labels, rows):
            scores = raw_scores.astype(np.float64).reshape(len(raw_scores), -1)
            if kind is None:
                kind = "probabilities" if _looks_like_probabilities(scores, args.multilabel) else "logits"
            _check_scores(scores, first_row, kind == "probabilities", args.multilabel)
            if args.multilabel:
                targets = _binary_labels(raw_labels, first_row, columns)
            else:
                targets = _class_labels(raw_labels, first_row, columns, args.ignore_index)
                if args.ignore_index is not None:
                    kept = targets != args.ignore_index
                    ignored += int((~kept).sum())
                    scores, targets = scores[kept], targets[kept]
            tally.add(torch.from_numpy(scores), torch.from_numpy(targets), logits=kind == "logits")
            bar.update(task, completed=predictions.position)
    result = tally.result()
    if tally.samples == 0:
        raise CLIError("no samples to score" + (f" (all {ignored} labels are --ignore-index)" if ignored else ""))
    result = {"predictions": args.predictions, "labels": args.labels, "kind": kind, **result}
    if not args.multilabel:
        result["ignored"] = ignored
    return result


def _json_safe(value: object) -> object:
    """Non-finite floats (an empty bin, a probability of 0 on the true class) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _print_tables(result: dict, detected: bool, bins: int) -> None:
    out = _console.stdout()
    kind = result["kind"]
    kind_words = f"{kind} (auto-detected)" if detected else kind
    num = _console.number
    multilabel = result["task"] == "multilabel"
    summary = [["samples", str(result["samples"])]]
    if multilabel:
        summary += [
            ["labels per sample", str(result["labels_per_sample"])],
            ["predictions", kind_words],
            ["binary cross-entropy (nats)", num(result["binary_cross_entropy"])],
            ["accuracy (per label, at 0.5)", num(result["accuracy"])],
            ["exact match (all labels right)", num(result["exact_match"])],
        ]
    else:
        summary += [["ignored", str(result["ignored"])]] if result["ignored"] else []
        summary += [
            ["classes", str(result["classes"])],
            ["predictions", kind_words],
            ["cross-entropy (nats)", num(result["cross_entropy"])],
            ["perplexity", num(result["perplexity"], 2)],
            ["accuracy", num(result["accuracy"])],
            *([f"top-{k} accuracy", num(v)] for k, v in result["top_k_accuracy"].items()),
        ]
    summary.append([f"expected calibration error ({bins} bins)", num(result["ece"])])
    out.print(_console.table(f"{result['predictions']} vs {result['labels']}", ["metric", "value"], summary))
    if detected:
        other = "logits" if kind == "probabilities" else "probabilities"
        out.print(f"Predictions read as {kind}; pass --kind {other} if they are {other}.", markup=False)

    if multilabel:
        columns = ["label", "positives", "predicted", "accuracy", "binary cross-entropy"]
        keys = ["label", "positives", "predicted", "accuracy", "binary_cross_entropy"]
        entries = result["per_label"]
    else:
        columns = ["class", "support", "predicted", "recall", "precision", "cross-entropy"]
        keys = ["class", "support", "predicted", "recall", "precision", "cross_entropy"]
        entries = result["per_class"]
    shown = sorted(entries, key=lambda e: -e[keys[1]])[:MAX_CLASS_ROWS] if len(entries) > MAX_CLASS_ROWS else entries
    rows = [[str(e[k]) if isinstance(e[k], int) else num(e[k]) for k in keys] for e in shown]
    title = f"per {keys[0]}" + (
        f" ({len(shown)} of {len(entries)} with the most {keys[1]}; --json lists all)"
        if len(shown) < len(entries)
        else ""
    )
    out.print(_console.table(title, columns, rows))


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        output_file(args.plot, "--plot", ".png")
    if args.multilabel and (args.topk is not None or args.ignore_index is not None):
        raise CLIError("--topk and --ignore-index apply to one label per sample, not to --multilabel")
    result = _tally(args)
    if args.plot is not None:
        from crossent.cli._plots import reliability_diagram

        reliability_diagram(result, args.plot)
    if args.json:
        print(json.dumps(_json_safe(result), indent=2, allow_nan=False))
    else:
        _print_tables(result, args.kind == "auto", args.bins)
        if args.plot is not None:
            _console.stdout().print(f"reliability diagram written to {args.plot}")
    return 0
