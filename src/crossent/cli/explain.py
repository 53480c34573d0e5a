"""``crossent explain``: a loss computed step by step, the way the tutorials do it by hand.

The steps show softmax, log-softmax, the picked target term, each sample's loss, and the reduction
with what it divides by, all in float64. Their numbers come from ``crossent.numpy`` (the readable
NumPy reference); the reduction is then done by hand on the per-sample losses, and the result is
confirmed by ``crossent.numpy`` in one call, by ``crossent.functional`` (the PyTorch implementation)
and by ``torch.nn``'s loss module. ``crossent.functional`` runs first, so bad input gets crossent's
own error message (the same as torch's).

With ``--loss focal`` the worked example is shown twice over, sample by sample: ``crossent.focal_loss``
next to ``crossent.cross_entropy``, with the focal factor ``(1 - p_t)**gamma`` and each sample's share
of the total under both, then both losses reduced. Those numbers come from the two library calls.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import crossent
from crossent import functional as crossent_functional
from crossent import numpy as cnp
from crossent._reduction import Reduction
from crossent.cli import _console
from crossent.cli._errors import CLIError
from crossent.cli._inputs import json_or_file
from crossent.cli._parser import EXPLAIN_GAMMA

# The worked examples explained when no input is given: a small cross-entropy and binary cross-entropy.
EXAMPLE_LOGITS = [[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]]
EXAMPLE_TARGETS = [0, 1, 1]
EXAMPLE_BINARY_LOGITS = [[0.8], [-1.2], [0.1]]
EXAMPLE_BINARY_TARGETS = [[1.0], [0.0], [1.0]]
EXAMPLE_BINARY_PROBABILITIES = [[0.7], [0.2], [0.6]]

DEFAULT_IGNORE_INDEX = -100
BCE_LOG_FLOOR = -100.0  # BCELoss clamps each log at -100 so that 0 * log 0 stays finite


@dataclass
class Step:
    """One titled table of the calculation.

    ``classes`` holds the class of each column (None for a column not about one class); it is empty
    where no column is, and lets a terminal too narrow for every class show the first and last ones.
    """

    title: str
    formula: str
    columns: list[str]
    rows: list[list[str]]
    classes: list[int | None] = field(default_factory=list)


@dataclass
class Explanation:
    """The calculation of one loss: its steps, its reduction, and the results.

    ``by_hand`` is the reduction done here on the per-sample losses of the steps; ``reference`` is
    ``crossent.numpy`` computing the reduced loss in one call. They are two separate computations.
    """

    loss_name: str
    steps: list[Step]
    reduction: str  # the reduction step, in words and numbers
    by_hand: np.ndarray
    reference: np.ndarray
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """What the user asked to explain, as float64 tensors ready for crossent and torch."""

    input: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None
    ignore_index: int
    label_smoothing: float
    reduction: Reduction
    binary: str | None  # None (cross-entropy), "logits" or "probabilities"

    @property
    def function(self) -> str:
        """The name of the loss in crossent.functional, crossent.numpy and torch.nn.functional."""
        return {"logits": "binary_cross_entropy_with_logits", "probabilities": "binary_cross_entropy"}.get(
            self.binary or "", "cross_entropy"
        )

    def numpy_loss(self, input: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
        """crossent.numpy's loss with this problem's options, on ``input`` and ``target``."""
        weight = None if self.weight is None else self.weight.numpy()
        if self.binary == "logits":
            pos_weight = None if self.pos_weight is None else self.pos_weight.numpy()
            loss = cnp.binary_cross_entropy_with_logits(
                input, target, weight=weight, reduction=reduction, pos_weight=pos_weight
            )
        elif self.binary == "probabilities":
            loss = cnp.binary_cross_entropy(input, target, weight=weight, reduction=reduction)
        else:
            loss = cnp.cross_entropy(
                input,
                target,
                weight=weight,
                ignore_index=self.ignore_index,
                reduction=reduction,
                label_smoothing=self.label_smoothing,
            )
        return np.asarray(loss)

    def crossent_loss(self) -> torch.Tensor:
        """crossent.functional's loss: the PyTorch implementation, which validates the input."""
        if self.binary == "logits":
            return crossent_functional.binary_cross_entropy_with_logits(
                self.input, self.target, weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight
            )
        if self.binary == "probabilities":
            return crossent_functional.binary_cross_entropy(
                self.input, self.target, weight=self.weight, reduction=self.reduction
            )
        return crossent_functional.cross_entropy(
            self.input,
            self.target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def torch_module(self) -> torch.nn.Module:
        """torch.nn's loss module with this problem's options: the confirmation."""
        if self.binary == "logits":
            return torch.nn.BCEWithLogitsLoss(weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight)
        if self.binary == "probabilities":
            return torch.nn.BCELoss(weight=self.weight, reduction=self.reduction)
        return torch.nn.CrossEntropyLoss(
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


def _fmt(values: np.ndarray | float, digits: int = 4) -> list[str]:
    return [_console.number(float(v), digits) for v in np.atleast_1d(values)]


def _softmax_steps(x: np.ndarray) -> tuple[list[Step], np.ndarray]:
    """Steps 1 and 2, shared by both kinds of target; returns them and log p."""
    p = cnp.softmax(x, dim=1)
    log_p = cnp.log_softmax(x, dim=1)
    # log Σ_k exp x[n,k] = x[n,c] − log p[n,c] for every c; the largest logit gives a finite one
    with np.errstate(invalid="ignore"):
        lse = x.max(axis=1) - log_p.max(axis=1)
    classes = list(range(x.shape[1]))
    softmax = Step(
        "Step 1. softmax turns each row of logits into probabilities",
        "p[n,c] = exp(x[n,c]) / Σ_k exp x[n,k]",
        ["n", *(f"x[n,{c}]" for c in classes), "log Σ_k exp x[n,k]", *(f"p[n,{c}]" for c in classes)],
        [[str(n), *_fmt(x[n]), *_fmt(lse[n]), *_fmt(p[n])] for n in range(x.shape[0])],
        [None, *classes, None, *classes],
    )
    log_softmax = Step(
        "Step 2. log-softmax: the log of each probability",
        "log p[n,c] = x[n,c] − log Σ_k exp x[n,k]",
        ["n", *(f"log p[n,{c}]" for c in classes)],
        [[str(n), *_fmt(log_p[n])] for n in range(x.shape[0])],
        [None, *classes],
    )
    return [softmax, log_softmax], log_p


def _reduce(losses: np.ndarray, reduction: str, divisor: float, divisor_words: str) -> tuple[np.ndarray, str]:
    """The reduction done by hand on the per-sample losses, and how it was done in words."""
    total = float(losses.sum())
    if reduction == "none":
        return losses, "none: no reduction, the loss is the vector of ℓ_n above"
    if reduction == "sum":
        return np.asarray(total), f"sum: Σ ℓ_n = {_console.number(total, 6)}"
    value = total / divisor if divisor else float("nan")  # 0/0 is nan, as in torch
    words = (
        f"mean: Σ ℓ_n / {divisor_words} = {_console.number(total, 6)} / {_console.count_or_number(divisor)}"
        f" = {_console.number(value, 6)}"
    )
    return np.asarray(value), words


def _unbatched(value: np.ndarray, problem: Problem) -> np.ndarray:
    """An unbatched (C,) input gives a 0-d 'none' result, as in torch."""
    return value.reshape(()) if problem.input.dim() == 1 and problem.reduction == "none" else value


def _reference(problem: Problem) -> np.ndarray:
    """crossent.numpy's loss for the whole problem in one call, with the requested reduction."""
    return problem.numpy_loss(problem.input.numpy(), problem.target.numpy(), problem.reduction)


def explain_class_targets(problem: Problem) -> Explanation:
    """Cross-entropy with class-index targets, optionally weighted, smoothed and with ignored samples."""
    x = problem.input.numpy().reshape(-1, problem.input.shape[-1])
    y = problem.target.numpy().reshape(-1)
    n_classes = x.shape[1]
    w = problem.weight.numpy() if problem.weight is not None else np.ones(n_classes)
    eps = problem.label_smoothing if problem.label_smoothing > 0 else 0.0  # torch ignores ε < 0 and nan
    steps, log_p = _softmax_steps(x)
    losses = problem.numpy_loss(x, y, "none")

    kept = y != problem.ignore_index
    y_kept = np.where(kept, y, 0)
    picked = log_p[np.arange(len(y)), y_kept]
    w_picked = w[y_kept]
    weighted = problem.weight is not None
    columns = ["n", "y[n]", "log p[n,y[n]]"] + (["w[y[n]]"] if weighted else [])
    formula = "ℓ_n = −w[y[n]] · log p[n,y[n]]" if weighted else "ℓ_n = −log p[n,y[n]]"
    if eps:
        smooth_words = "−Σ_c w[c] log p[n,c]" if weighted else "−Σ_c log p[n,c]"
        columns += [smooth_words]
        nll_words = "−w[y[n]] log p[n,y[n]]" if weighted else "−log p[n,y[n]]"
        formula = f"ℓ_n = (1 − ε)·({nll_words}) + (ε/C)·({smooth_words}),   ε = {eps:g}, C = {n_classes}"
    columns += ["ℓ_n"]
    rows = []
    for n in range(len(y)):
        if not kept[n]:
            rows.append([str(n), f"{y[n]} (ignored)", *["—"] * (len(columns) - 3), "0"])
            continue
        row = [str(n), str(y[n]), *_fmt(picked[n])]
        row += _fmt(w_picked[n]) if weighted else []
        row += _fmt(-(w * log_p[n]).sum()) if eps else []
        rows.append(row + _fmt(losses[n]))
    steps.append(Step("Step 3. pick the target's log-probability: each sample's loss", formula, columns, rows))

    divisor = float(w_picked[kept].sum())
    if weighted:
        divisor_words = "Σ w[y[n]] over kept samples"
    else:
        divisor_words = "number of samples" if kept.all() else "number of kept samples"
    by_hand, reduction = _reduce(losses, problem.reduction, divisor, divisor_words)
    notes = [] if kept.all() else [f"ignored samples (target {problem.ignore_index}) add 0 and are not counted"]
    return Explanation(
        "cross-entropy, class-index targets",
        steps,
        reduction,
        _unbatched(by_hand, problem),
        _reference(problem),
        notes,
    )


def explain_probability_targets(problem: Problem) -> Explanation:
    """Cross-entropy against a target distribution per sample (targets shaped like the logits)."""
    x = problem.input.numpy().reshape(-1, problem.input.shape[-1])
    t = problem.target.numpy().reshape(x.shape)
    n_classes = x.shape[1]
    eps = problem.label_smoothing if problem.label_smoothing > 0 else 0.0
    steps, _ = _softmax_steps(x)
    losses = problem.numpy_loss(x, t, "none")

    q = (1 - eps) * t + eps / n_classes if eps else t
    classes = list(range(n_classes))
    weighted = "w[c] · " if problem.weight is not None else ""
    q_words = f"q[n,c] = (1 − ε)·t[n,c] + ε/C, ε = {eps:g}" if eps else "q = t"
    steps.append(
        Step(
            "Step 3. weigh each log-probability by the target probability: each sample's loss",
            f"ℓ_n = −Σ_c {weighted}q[n,c] · log p[n,c],   {q_words}",
            ["n", *(f"q[n,{c}]" for c in classes), "ℓ_n"],
            [[str(n), *_fmt(q[n]), *_fmt(losses[n])] for n in range(x.shape[0])],
            [None, *classes, None],
        )
    )
    by_hand, reduction = _reduce(losses, problem.reduction, float(x.shape[0]), "number of samples")
    notes = ["with probability targets 'mean' divides by the number of samples; class weights do not enter it"]
    return Explanation(
        "cross-entropy, probability targets",
        steps,
        reduction,
        _unbatched(by_hand, problem),
        _reference(problem),
        notes,
    )


def explain_binary(problem: Problem) -> Explanation:
    """Binary cross-entropy, elementwise, on logits (BCEWithLogitsLoss) or probabilities (BCELoss)."""
    shape = problem.input.shape
    x = problem.input.numpy().reshape(-1)
    y = problem.target.numpy().reshape(-1)
    on_logits = problem.binary == "logits"
    losses = problem.numpy_loss(x.reshape(shape), y.reshape(shape), "none")
    columns = ["i", "x" if on_logits else "p", "y"]
    if on_logits:
        # log σ(x) = min(x, 0) − log1p(e^−|x|) stays finite for large |x|; log(1 − σ(x)) = log σ(x) − x
        log_sig = np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))
        shown = [np.exp(log_sig), log_sig, log_sig - x]
        columns += ["σ(x)", "log σ(x)", "log(1 − σ(x))"]
        formula = "ℓ_i = −[y·log σ(x) + (1 − y)·log(1 − σ(x))],   σ(x) = 1 / (1 + e^−x)"
        if problem.pos_weight is not None:
            shown.append(np.broadcast_to(problem.pos_weight.numpy(), shape).reshape(-1))
            columns.append("pos_weight")
            formula = formula.replace("[y·", "[pos_weight·y·", 1)
    else:
        with np.errstate(divide="ignore"):
            shown = [np.maximum(np.log(x), BCE_LOG_FLOOR), np.maximum(np.log1p(-x), BCE_LOG_FLOOR)]
        columns += ["log p", "log(1 − p)"]
        formula = "ℓ_i = −[y·log p + (1 − y)·log(1 − p)],   each log clamped at −100 as BCELoss does"
    if problem.weight is not None:
        shown.append(np.broadcast_to(problem.weight.numpy(), shape).reshape(-1))
        columns.append("w")
        formula = formula.replace("ℓ_i = −[", "ℓ_i = −w·[", 1)
    columns.append("ℓ_i")
    flat_losses = np.asarray(losses).reshape(-1)
    rows = [
        [str(i), *_fmt(x[i]), *_fmt(y[i]), *(_fmt(v[i])[0] for v in shown), *_fmt(flat_losses[i])]
        for i in range(len(x))
    ]
    steps = [Step("Step 1. each element is its own yes/no prediction", formula, columns, rows)]
    by_hand, reduction = _reduce(np.asarray(losses), problem.reduction, float(x.size), "number of elements")
    name = "binary cross-entropy on logits" if on_logits else "binary cross-entropy on probabilities"
    return Explanation(name, steps, reduction.replace("ℓ_n", "ℓ_i"), by_hand, _reference(problem))


def explain(problem: Problem) -> tuple[Explanation, torch.Tensor, torch.Tensor]:
    """The hand calculation of ``problem``, crossent's result and torch's result."""
    try:
        ours = problem.crossent_loss()
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    theirs = problem.torch_module()(problem.input, problem.target)
    if problem.binary is not None:
        explanation = explain_binary(problem)
    elif problem.input.shape == problem.target.shape:
        explanation = explain_probability_targets(problem)
    else:
        explanation = explain_class_targets(problem)
    return explanation, ours, theirs


def problem_from_args(args: argparse.Namespace) -> Problem:
    """The ``explain`` options as a Problem, with the worked example where no input is given."""
    binary = args.binary
    focal = getattr(args, "loss", "cross_entropy") == "focal"
    if getattr(args, "gamma", None) is not None and not focal:
        raise CLIError("--gamma applies to the focal loss: add --loss focal")
    if focal and binary is not None:
        raise CLIError("--loss focal explains the softmax focal loss of class-index targets, not --binary")
    if args.input is not None and args.targets is None:
        raise CLIError("--logits needs --targets")
    if binary is None and args.pos_weight is not None:
        raise CLIError("--pos-weight applies to binary cross-entropy: add --binary")
    if binary == "probabilities" and args.pos_weight is not None:
        raise CLIError("--pos-weight applies to logits (BCEWithLogitsLoss), not --binary probabilities")
    if binary is not None and (args.ignore_index is not None or args.label_smoothing):
        raise CLIError("--ignore-index and --label-smoothing apply to cross-entropy, not --binary")
    # the worked example for whatever is not given
    example_input, example_targets = {
        None: (EXAMPLE_LOGITS, EXAMPLE_TARGETS),
        "logits": (EXAMPLE_BINARY_LOGITS, EXAMPLE_BINARY_TARGETS),
        "probabilities": (EXAMPLE_BINARY_PROBABILITIES, EXAMPLE_BINARY_TARGETS),
    }[binary]
    x = json_or_file(args.input, "--logits") if args.input is not None else np.asarray(example_input, np.float64)
    t = json_or_file(args.targets, "--targets") if args.targets is not None else np.asarray(example_targets, np.float64)
    x = x.astype(np.float64)
    if x.ndim not in (1, 2):
        raise CLIError(f"explain takes 1-D (C,) or 2-D (N, C) logits; got shape {x.shape}")
    if x.size == 0:
        raise CLIError(f"--logits: nothing to explain, the logits are empty (shape {x.shape})")
    if binary is None and t.shape != x.shape:
        t = _class_indices(t, x)
    target = torch.from_numpy(np.ascontiguousarray(t, dtype=t.dtype if t.dtype == np.int64 else np.float64))
    return Problem(
        input=torch.from_numpy(np.ascontiguousarray(x)),
        target=target,
        weight=_optional_tensor(args.weight, "--weight", class_weights=binary is None),
        pos_weight=_optional_tensor(args.pos_weight, "--pos-weight"),
        ignore_index=DEFAULT_IGNORE_INDEX if args.ignore_index is None else args.ignore_index,
        label_smoothing=args.label_smoothing,
        reduction=args.reduction,
        binary=binary,
    )


def _vector(a: np.ndarray) -> np.ndarray:
    """A one-row or one-column table (as a CSV file of a vector reads) as a 1-D array."""
    return a.reshape(-1) if a.ndim == 2 and 1 in a.shape else a


def _class_indices(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = _vector(t)
    if t.ndim == 0 and x.ndim == 2:
        t = t.reshape(1)
    fractional = t[t != np.round(t)] if t.dtype.kind == "f" else np.zeros(0)
    if fractional.size:
        raise CLIError(
            f"--targets: class indices must be whole numbers, got {fractional.flat[0]:g}; "
            f"probability targets need the logits' shape {x.shape}, got {t.shape}"
        )
    return t.astype(np.int64)


def _optional_tensor(text: str | None, option: str, class_weights: bool = False) -> torch.Tensor | None:
    if text is None:
        return None
    values = json_or_file(text, option)
    return torch.from_numpy(np.ascontiguousarray(_vector(values) if class_weights else values, np.float64))


def _values(value: torch.Tensor | np.ndarray, rows: int | None) -> str:
    """The loss as numbers: all of them, or the first ``rows`` of more (a 'none' loss of every element)."""
    numbers = _fmt(np.asarray(value, dtype=np.float64).reshape(-1), 10)
    if rows is None or len(numbers) <= rows:
        return ", ".join(numbers)
    return ", ".join(numbers[:rows]) + f", … ({len(numbers)} values)"


def _elide(step: Step, rows: list[list[str]], kept: int) -> tuple[list[str], list[list[str]]]:
    """The step's columns and ``rows``, with classes ``kept − 1`` … C − 2 of each block shown as one "…"."""
    last = max((c for c in step.classes if c is not None), default=0)
    picks: list[int | None] = []  # column indices, None for "…"
    for index, c in enumerate(step.classes or [None] * len(step.columns)):
        if c is None or c < kept - 1 or c == last:
            picks.append(index)
        elif c == kept - 1:
            picks.append(None)
    columns = [step.columns[i] if i is not None else "…" for i in picks]
    return columns, [[row[i] if i is not None else "…" for i in picks] for row in rows]


def _fitted_table(out: Console, step: Step, rows: int | None) -> tuple[Table, list[str]]:
    """The step's first ``rows`` rows, as many classes wide as the terminal allows, and notes on what is left out."""
    shown = step.rows[:rows]
    n_classes = len({c for c in step.classes if c is not None})
    # a table is as wide as its widest cells, so one row of those measures it (and much faster than every row)
    widest = [[max((row[i] for row in shown), key=cell_len, default="") for i in range(len(step.columns))]]
    unbounded = out.options.update_width(2**31)  # the natural width, as if the terminal had no edge

    def width(kept: int) -> int:
        return out.measure(_console.table(None, *_elide(step, widest, kept)), options=unbounded).maximum

    # every column takes at least 4 characters (value, padding, border), so more than width/4 never fit
    kept = min(n_classes, max(2, out.width // 4))
    while kept > 2 and width(kept) > out.width:
        kept -= 1
    notes = []
    if kept < n_classes:
        left_out = f"class {kept - 1} is" if kept == n_classes - 1 else f"classes {kept - 1} to {n_classes - 2} are"
        notes.append(f"{left_out} left out to fit {out.width} columns")
    if len(shown) < len(step.rows):
        notes.append(f"{len(step.rows) - len(shown)} more rows are left out; --rows all shows every one")
    return _console.table(None, *_elide(step, shown, kept)), notes


@dataclass
class FocalComparison:
    """The focal loss next to cross-entropy, per sample and reduced, all computed by crossent."""

    gamma: float
    step: Step
    cross_entropy: np.ndarray  # reduced with the problem's reduction
    focal: np.ndarray


def _share(losses: np.ndarray, kept: np.ndarray) -> list[str]:
    """Each kept sample's part of the summed loss, in percent ("—" for ignored samples)."""
    total = float(losses.sum())
    return [f"{100 * v / total:.1f}%" if k and total > 0 else "—" for v, k in zip(losses, kept, strict=True)]


def compare_focal(problem: Problem, gamma: float) -> FocalComparison:
    """``crossent.focal_loss`` next to ``crossent.cross_entropy`` on the same class-index targets."""
    if problem.input.shape == problem.target.shape:
        raise CLIError("--loss focal needs class-index targets: probability targets have no single p_t")
    x = problem.input.reshape(-1, problem.input.shape[-1])
    y = problem.target.reshape(-1)
    w, ignore, eps = problem.weight, problem.ignore_index, problem.label_smoothing
    try:
        ce = crossent.cross_entropy(x, y, w, ignore_index=ignore, reduction="none", label_smoothing=eps)
        focal = crossent.focal_loss(
            x, y, gamma=gamma, weight=w, ignore_index=ignore, reduction="none", label_smoothing=eps
        )
        ce_reduced = crossent.cross_entropy(
            problem.input, problem.target, w, ignore_index=ignore, reduction=problem.reduction, label_smoothing=eps
        )
        focal_reduced = crossent.focal_loss(
            problem.input,
            problem.target,
            gamma=gamma,
            weight=w,
            ignore_index=ignore,
            reduction=problem.reduction,
            label_smoothing=eps,
        )
        # without weights and smoothing, cross-entropy is −log p_t, so p_t = exp(−cross-entropy); the focal
        # factor (1 − p_t)^γ is what the focal loss multiplies it by: the ratio of the two, as crossent computes them
        plain_ce = crossent.cross_entropy(x, y, ignore_index=problem.ignore_index, reduction="none")
        plain_focal = crossent.focal_loss(x, y, gamma=gamma, ignore_index=problem.ignore_index, reduction="none")
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    ce_n, focal_n = ce.numpy(), focal.numpy()
    plain_ce_n, plain_focal_n = plain_ce.numpy(), plain_focal.numpy()
    p_t = np.exp(-plain_ce_n)
    certain = 1.0 if gamma == 0 else 0.0  # (1 − p_t)^γ at p_t = 1, where both losses are 0
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(plain_ce_n > 0, plain_focal_n / plain_ce_n, certain)
    kept = (y != problem.ignore_index).numpy()
    ce_share, focal_share = _share(ce_n, kept), _share(focal_n, kept)

    plain = problem.weight is None and not problem.label_smoothing > 0
    ce_words = "−log p_t" if plain else "ℓ_CE"  # with weights or smoothing, cross-entropy is more than −log p_t
    formula = (
        f"p_t = p[n,y[n]],   ℓ_focal = (1 − p_t)^γ · {'(−log p_t)' if plain else 'ℓ_CE'},   γ = {gamma:g},"
        "   % = each sample's share, ℓ_n / Σ ℓ"
    )
    columns = ["n", "y[n]", "p_t", ce_words, "(1 − p_t)^γ", "ℓ_focal", "CE %", "focal %"]
    rows = []
    for n in range(len(y)):
        if not kept[n]:
            rows.append([str(n), f"{int(y[n])} (ignored)", "—", "0", "—", "0", "—", "—"])
            continue
        rows.append(
            [
                str(n),
                str(int(y[n])),
                *_fmt(p_t[n]),
                *_fmt(ce_n[n]),
                *_fmt(factor[n]),
                *_fmt(focal_n[n]),
                ce_share[n],
                focal_share[n],
            ]
        )
    step = Step("Step 1. each sample's loss, with and without the focal factor", formula, columns, rows)
    return FocalComparison(gamma, step, ce_reduced.numpy(), focal_reduced.numpy())


def run_focal(args: argparse.Namespace, problem: Problem) -> int:
    gamma = EXPLAIN_GAMMA if args.gamma is None else args.gamma
    comparison = compare_focal(problem, gamma)
    out = _console.stdout()
    out.print(
        f"[bold]Explaining the focal loss next to cross-entropy[/], gamma={gamma:g}, reduction={problem.reduction!r}"
    )
    out.print(
        f"input: shape {tuple(problem.input.shape)}   target: shape {tuple(problem.target.shape)}, "
        f"{problem.target.dtype}"
    )
    step = comparison.step
    out.print()
    out.print(f"[bold]{escape(step.title)}[/]")
    out.print(f"  {escape(step.formula)}", soft_wrap=True)
    table, notes = _fitted_table(out, step, args.rows)
    out.print(table)
    for note in notes:
        out.print(f"  ({escape(note)})")
    out.print()
    rows = [
        ["crossent.cross_entropy", _values(comparison.cross_entropy, args.rows)],
        [f"crossent.focal_loss, gamma={gamma:g}", _values(comparison.focal, args.rows)],
    ]
    out.print(f"[bold]Step 2. reduction: {problem.reduction}, of both[/]")
    out.print(_console.table(None, ["computed by", "loss"], rows))
    out.print()
    words = (
        "The focal factor (1 − p_t)^γ is near 0 for a sample the model already gets right (p_t near 1) and "
        "near 1 for one it gets wrong, so easy samples add less to the loss and the hard ones take a larger "
        "share of it; a larger γ down-weights them more. With γ = 0 the factor is 1 and the focal loss is "
        "cross-entropy."
    )
    out.print(escape(words))
    return 0


def run(args: argparse.Namespace) -> int:
    problem = problem_from_args(args)
    if args.loss == "focal":
        return run_focal(args, problem)
    explanation, ours, theirs = explain(problem)
    out = _console.stdout()
    out.print(f"[bold]Explaining {explanation.loss_name}[/], reduction={problem.reduction!r}")
    out.print(
        f"input: shape {tuple(problem.input.shape)}   target: shape {tuple(problem.target.shape)}, "
        f"{problem.target.dtype}"
    )
    for step in explanation.steps:
        out.print()
        out.print(f"[bold]{escape(step.title)}[/]")
        out.print(f"  {escape(step.formula)}", soft_wrap=True)
        table, notes = _fitted_table(out, step, args.rows)
        out.print(table)
        for note in notes:
            out.print(f"  ({escape(note)})")
    out.print()
    out.print(f"[bold]Step {len(explanation.steps) + 1}. reduction[/]")
    out.print(f"  {escape(explanation.reduction)}", soft_wrap=True)
    for note in explanation.notes:
        out.print(f"  note: {escape(note)}", soft_wrap=True)

    name = problem.function
    results = [
        ("the steps above", explanation.by_hand),
        (f"crossent.numpy.{name}", explanation.reference),
        (f"crossent.functional.{name}", ours.detach().numpy()),
        (f"torch.nn.{type(problem.torch_module()).__name__}", theirs.detach().numpy()),
    ]
    torch_value = results[-1][1]
    agree = all(np.allclose(value, torch_value, rtol=1e-9, atol=1e-12, equal_nan=True) for _, value in results)
    out.print()
    rows = [[who, _values(v, args.rows)] for who, v in results]
    out.print(_console.table("Confirmation", ["computed by", "loss"], rows))
    out.print("all four agree" if agree else "[red]the results differ[/]")
    return 0 if agree else 1
