"""Streaming evaluation metrics for ``crossent eval``: add chunks of rows, read the totals at the end.

Losses come from ``crossent.functional``; everything else is counting. All sums are float64 and
cover the whole file, so chunking does not change a result beyond summation order.

Calibration (expected calibration error, ECE) splits [0, 1] into equal-width bins of confidence and
averages |accuracy − confidence| over bins, weighted by how many predictions fall in each:
``ECE = Σ_b (n_b / N) · |acc_b − conf_b|``. For one-of-C classification the confidence is the top
class's probability and accuracy is whether that class is right; for multi-label it is each label's
predicted probability against how often that label is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crossent import functional as crossent_functional


@dataclass(frozen=True)
class Bin:
    """One calibration bin: predictions with confidence in [lower, upper)."""

    lower: float
    upper: float
    count: int
    confidence: float  # mean predicted probability in the bin (nan when empty)
    accuracy: float  # fraction right (multi-class) or fraction on (multi-label) (nan when empty)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


class _Calibration:
    """Confidence histogram accumulated over chunks."""

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.count = torch.zeros(bins, dtype=torch.float64)
        self.confidence = torch.zeros(bins, dtype=torch.float64)
        self.hits = torch.zeros(bins, dtype=torch.float64)

    def add(self, confidence: torch.Tensor, hit: torch.Tensor) -> None:
        # confidence 1.0 belongs to the last bin, [1 − 1/bins, 1]
        index = (confidence * self.bins).long().clamp_(0, self.bins - 1)
        self.count += torch.bincount(index, minlength=self.bins)
        self.confidence += torch.bincount(index, weights=confidence, minlength=self.bins)
        self.hits += torch.bincount(index, weights=hit.to(torch.float64), minlength=self.bins)

    def ece(self) -> float:
        return _ratio(float((self.hits - self.confidence).abs().sum()), float(self.count.sum()))

    def table(self) -> list[Bin]:
        return [
            Bin(
                b / self.bins,
                (b + 1) / self.bins,
                int(self.count[b]),
                _ratio(float(self.confidence[b]), float(self.count[b])),
                _ratio(float(self.hits[b]), float(self.count[b])),
            )
            for b in range(self.bins)
        ]


class MulticlassTally:
    """One label per sample out of C classes: cross-entropy, accuracy, top-k, ECE, per-class counts."""

    def __init__(self, n_classes: int, topk: list[int], bins: int) -> None:
        self.n_classes = n_classes
        self.topk = topk
        self.samples = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.topk_hits = dict.fromkeys(topk, 0)
        self.calibration = _Calibration(bins)
        zeros = torch.zeros(n_classes, dtype=torch.float64)
        self.support, self.predicted, self.class_correct, self.class_loss = (zeros.clone() for _ in range(4))

    def add(self, scores: torch.Tensor, labels: torch.Tensor, logits: bool) -> None:
        """``scores``: (n, C) float64 logits or probabilities; ``labels``: (n,) int64 in [0, C)."""
        log_probabilities = crossent_functional.log_softmax(scores, dim=1) if logits else torch.log(scores)
        losses = crossent_functional.nll_loss(log_probabilities, labels, reduction="none")  # −log p[n, y_n]
        # softmax is monotone, so ranking the scores ranks the probabilities; the first maximum wins ties
        predicted = scores.argmax(dim=1)
        hit = predicted == labels
        self.samples += labels.numel()
        self.loss_sum += float(losses.sum())
        self.correct += int(hit.sum())
        if self.topk:
            top = scores.topk(min(max(self.topk), self.n_classes), dim=1).indices == labels[:, None]
            for k in self.topk:
                self.topk_hits[k] += int(top[:, :k].any(dim=1).sum())
        first = predicted[:, None]
        confidence = log_probabilities.gather(1, first).exp() if logits else scores.gather(1, first)
        self.calibration.add(confidence[:, 0], hit)
        self.support += torch.bincount(labels, minlength=self.n_classes)
        self.predicted += torch.bincount(predicted, minlength=self.n_classes)
        self.class_correct += torch.bincount(labels, weights=hit.to(torch.float64), minlength=self.n_classes)
        self.class_loss += torch.bincount(labels, weights=losses, minlength=self.n_classes)

    def result(self) -> dict[str, object]:
        cross_entropy = _ratio(self.loss_sum, self.samples)
        return {
            "task": "multiclass",
            "samples": self.samples,
            "classes": self.n_classes,
            "cross_entropy": cross_entropy,
            "perplexity": math.exp(cross_entropy) if cross_entropy < 709 else math.inf,
            "accuracy": _ratio(self.correct, self.samples),
            "top_k_accuracy": {str(k): _ratio(hits, self.samples) for k, hits in self.topk_hits.items()},
            "ece": self.calibration.ece(),
            "bins": [vars(b) for b in self.calibration.table()],
            "per_class": [
                {
                    "class": c,
                    "support": int(self.support[c]),
                    "predicted": int(self.predicted[c]),
                    "recall": _ratio(float(self.class_correct[c]), float(self.support[c])),
                    "precision": _ratio(float(self.class_correct[c]), float(self.predicted[c])),
                    "cross_entropy": _ratio(float(self.class_loss[c]), float(self.support[c])),
                }
                for c in range(self.n_classes)
            ],
        }


class MultilabelTally:
    """Independent 0/1 labels per column: binary cross-entropy, accuracies, ECE, per-label counts."""

    def __init__(self, n_labels: int, bins: int) -> None:
        self.n_labels = n_labels
        self.samples = 0
        self.loss_sum = 0.0
        self.exact = 0
        self.calibration = _Calibration(bins)
        zeros = torch.zeros(n_labels, dtype=torch.float64)
        self.positives, self.predicted, self.label_correct, self.label_loss = (zeros.clone() for _ in range(4))

    def add(self, scores: torch.Tensor, labels: torch.Tensor, logits: bool) -> None:
        """``scores``: (n, L) float64 logits or probabilities; ``labels``: (n, L) float64 of 0 and 1."""
        if logits:
            losses = crossent_functional.binary_cross_entropy_with_logits(scores, labels, reduction="none")
            probabilities = torch.sigmoid(scores)
            on = scores > 0  # σ(x) > 1/2 exactly when x > 0, without σ's rounding
        else:
            losses = crossent_functional.binary_cross_entropy(scores, labels, reduction="none")
            probabilities = scores
            on = scores > 0.5
        hit = on == (labels == 1)
        self.samples += labels.shape[0]
        self.loss_sum += float(losses.sum())
        self.exact += int(hit.all(dim=1).sum())
        self.calibration.add(probabilities.reshape(-1), labels.reshape(-1))
        self.positives += labels.sum(dim=0)
        self.predicted += on.sum(dim=0)
        self.label_correct += hit.sum(dim=0)
        self.label_loss += losses.sum(dim=0)

    def result(self) -> dict[str, object]:
        decisions = self.samples * self.n_labels
        return {
            "task": "multilabel",
            "samples": self.samples,
            "labels_per_sample": self.n_labels,
            "binary_cross_entropy": _ratio(self.loss_sum, decisions),
            "accuracy": _ratio(float(self.label_correct.sum()), decisions),
            "exact_match": _ratio(self.exact, self.samples),
            "ece": self.calibration.ece(),
            "bins": [vars(b) for b in self.calibration.table()],
            "per_label": [
                {
                    "label": j,
                    "positives": int(self.positives[j]),
                    "predicted": int(self.predicted[j]),
                    "accuracy": _ratio(float(self.label_correct[j]), self.samples),
                    "binary_cross_entropy": _ratio(float(self.label_loss[j]), self.samples),
                }
                for j in range(self.n_labels)
            ],
        }
