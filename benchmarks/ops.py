"""The benchmarked ops: for each, its inputs, how it is called, torch's baselines and crossent's version.

Every implementation of an op has torch.nn.functional's signature, so one ``call`` serves them all.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import compositions, problems
from .problems import Problem, ProblemFactory
from .shapes import LinearShape, LogitsShape

Loss = Callable[..., torch.Tensor]
Call = Callable[[Loss, Problem], torch.Tensor]


class Unavailable(Exception):
    """An implementation that cannot run here: not written yet, or missing from the installed torch."""


@dataclass(frozen=True)
class Subject:
    """One implementation of an op as the harness runs it.

    ``load`` returns the function, or raises :class:`Unavailable` saying why it cannot run.
    """

    name: str
    load: Callable[[], Loss]


@dataclass(frozen=True)
class Op:
    """One benchmarked op: a problem per shape, and the implementations compared on it.

    ``baselines[0]`` is torch's own op. It computes the float64 ground truth, and every speedup is
    its median time divided by the implementation's. With ``intermediate_inputs``, every
    implementation gets its differentiable inputs as the outputs of an autograd op, not as leaves
    (see :class:`benchmarks.steps.Steps`).
    """

    name: str
    summary: str
    shape_type: type[LogitsShape] | type[LinearShape]
    make_problem: ProblemFactory
    call: Call
    baselines: tuple[Subject, ...]
    candidate: Subject
    intermediate_inputs: bool = False

    @property
    def reference(self) -> Subject:
        return self.baselines[0]

    def subjects(self, compiled: bool) -> tuple[Subject, ...]:
        """The implementations to compare, the reference first; with ``compiled``, torch.compile'd too."""
        extra = (_compiled(self.reference),) if compiled else ()
        return (self.reference, *extra, *self.baselines[1:], self.candidate)


def from_path(path: str, **options: object) -> Callable[[], Loss]:
    """A loader of the function at dotted ``path``, with ``options`` bound as keywords."""
    module_name, _, attribute = path.rpartition(".")

    def load() -> Loss:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise Unavailable(f"{module_name} does not import ({exc})") from exc
        function = getattr(module, attribute, None)
        if function is None:
            raise Unavailable(f"{path} does not exist")
        return functools.partial(function, **options) if options else function

    return load


def naive_linear_cross_entropy(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(input @ linear_weight.T, target)``: materialises the ``(N, V)`` logits."""
    return F.cross_entropy(F.linear(input, linear_weight), target)


def _torch_chunked_linear_cross_entropy() -> Loss:
    # torch 2.13's F.linear_cross_entropy takes the logits-materialising reference path when options is
    # None; LinearCrossEntropyOptions() opts in to its batch-chunked path with per-device auto defaults.
    if not hasattr(F, "linear_cross_entropy") or not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        raise Unavailable(f"torch {torch.__version__} has no F.linear_cross_entropy (added in 2.13)")
    return functools.partial(F.linear_cross_entropy, options=torch.nn.LinearCrossEntropyOptions())


def _compiled(reference: Subject) -> Subject:
    return Subject(f"{reference.name} compiled", lambda: torch.compile(reference.load()))


def _torch(function: Loss) -> Subject:
    return Subject("torch", lambda: function)


def _crossent(path: str, **options: object) -> Subject:
    return Subject("crossent", from_path(path, **options))


def _input_target(**options: object) -> Call:
    return lambda function, p: function(p["input"], p["target"], **options)


def _input_only(**options: object) -> Call:
    return lambda function, p: function(p["input"], **options)


def _hidden_classifier_target(function: Loss, p: Problem) -> torch.Tensor:
    return function(p["input"], p["linear_weight"], p["target"])


def _with_options(function: Loss, p: Problem, **options: object) -> torch.Tensor:
    if "linear_weight" in p.tensors:
        return function(p["input"], p["linear_weight"], p["target"], **options)
    return function(p["input"], p["target"], **options)


# each language-model option alone, and all of them with the statistics and an entropy bonus
LM_OPTIONS: dict[str, dict[str, object]] = {
    "softcap": {"softcap": 30.0},
    "temperature": {"temperature": 0.7},
    "z_loss": {"z_loss": 1e-4},
    "stats": {"softcap": 30.0, "temperature": 0.7, "z_loss": 1e-4, "entropy_bonus": 0.01},
}


def _lm_ops() -> tuple[Op, ...]:
    """``cross_entropy:<option>`` and ``linear_cross_entropy:<option>`` against torch's composition."""
    ops = []
    for name, options in LM_OPTIONS.items():
        call = functools.partial(_with_options, **options)
        what = ", ".join(f"{k}={v}" for k, v in options.items())
        ops.append(
            Op(
                f"cross_entropy:{name}",
                f"as cross_entropy with {what}",
                LogitsShape,
                functools.partial(problems.class_logits, ignored_fraction=0.1),
                call,
                (Subject("torch", lambda: compositions.torch_cross_entropy),),
                Subject("crossent", lambda: compositions.crossent_cross_entropy),
            )
        )
        ops.append(
            Op(
                f"linear_cross_entropy:{name}",
                f"as linear_cross_entropy with {what}",
                LinearShape,
                problems.linear,
                call,
                (Subject("torch naive", lambda: compositions.torch_linear_cross_entropy),),
                Subject("crossent", lambda: compositions.crossent_linear_cross_entropy),
            )
        )
    return tuple(ops)


_CROSS_ENTROPY = "crossent.functional.cross_entropy"

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op(
            "cross_entropy",
            "class indices, reduction='mean'",
            LogitsShape,
            problems.class_logits,
            _input_target(),
            (_torch(F.cross_entropy),),
            _crossent(_CROSS_ENTROPY),
        ),
        Op(
            "cross_entropy:inplace_backward",
            "as cross_entropy on logits computed by an op; crossent writes the gradient into them (opt-in)",
            LogitsShape,
            problems.class_logits,
            _input_target(),
            (_torch(F.cross_entropy),),
            _crossent(_CROSS_ENTROPY, inplace_backward=True),
            intermediate_inputs=True,
        ),
        Op(
            "cross_entropy:label_smoothing",
            "as cross_entropy, label_smoothing=0.1",
            LogitsShape,
            problems.class_logits,
            _input_target(label_smoothing=0.1),
            (_torch(F.cross_entropy),),
            _crossent(_CROSS_ENTROPY),
        ),
        Op(
            "cross_entropy:ignore_index",
            "as cross_entropy, 10% of the targets ignore_index=-100",
            LogitsShape,
            functools.partial(problems.class_logits, ignored_fraction=0.1),
            _input_target(),
            (_torch(F.cross_entropy),),
            _crossent(_CROSS_ENTROPY),
        ),
        Op(
            "nll_loss",
            "log-probabilities and class indices, reduction='mean'",
            LogitsShape,
            problems.class_log_probs,
            _input_target(),
            (_torch(F.nll_loss),),
            _crossent("crossent.functional.nll_loss"),
        ),
        Op(
            "log_softmax",
            "dim=-1, backward of a random upstream gradient",
            LogitsShape,
            problems.logits_with_upstream,
            _input_only(dim=-1),
            (_torch(F.log_softmax),),
            _crossent("crossent.functional.log_softmax"),
        ),
        Op(
            "softmax",
            "dim=-1, backward of a random upstream gradient",
            LogitsShape,
            problems.logits_with_upstream,
            _input_only(dim=-1),
            (_torch(F.softmax),),
            _crossent("crossent.functional.softmax"),
        ),
        Op(
            "binary_cross_entropy",
            "probabilities and soft targets, reduction='mean'",
            LogitsShape,
            problems.binary_probs,
            _input_target(),
            (_torch(F.binary_cross_entropy),),
            _crossent("crossent.functional.binary_cross_entropy"),
        ),
        Op(
            "binary_cross_entropy_with_logits",
            "logits and soft targets, reduction='mean'",
            LogitsShape,
            problems.binary_logits,
            _input_target(),
            (_torch(F.binary_cross_entropy_with_logits),),
            _crossent("crossent.functional.binary_cross_entropy_with_logits"),
        ),
        Op(
            "kl_div",
            "log-probabilities against probabilities, reduction='batchmean'",
            LogitsShape,
            problems.distributions,
            _input_target(reduction="batchmean"),
            (_torch(F.kl_div),),
            _crossent("crossent.functional.kl_div"),
        ),
        Op(
            "linear_cross_entropy",
            "hidden states and classifier, class indices with ignore_index=-100, reduction='mean'",
            LinearShape,
            problems.linear,
            _hidden_classifier_target,
            (
                Subject("torch naive", lambda: naive_linear_cross_entropy),
                Subject("torch chunked", _torch_chunked_linear_cross_entropy),
            ),
            _crossent("crossent.linear_cross_entropy"),
        ),
        *_lm_ops(),
        Op(
            "focal_loss",
            "softmax focal loss, gamma=2, 10% of the targets ignore_index=-100",
            LogitsShape,
            functools.partial(problems.class_logits, ignored_fraction=0.1),
            _input_target(gamma=2.0),
            (Subject("torch", lambda: compositions.torch_focal_loss),),
            _crossent("crossent.focal_loss"),
        ),
        Op(
            "focal_loss:soft",
            "softmax focal loss of class probabilities (soft labels), gamma=2",
            LogitsShape,
            problems.soft_labels,
            _input_target(gamma=2.0),
            (Subject("torch", lambda: compositions.torch_soft_focal_loss),),
            _crossent("crossent.focal_loss"),
        ),
        Op(
            "poly1_cross_entropy",
            "poly-1 cross-entropy, epsilon=1, 10% of the targets ignore_index=-100",
            LogitsShape,
            functools.partial(problems.class_logits, ignored_fraction=0.1),
            _input_target(epsilon=1.0),
            (Subject("torch", lambda: compositions.torch_poly1_cross_entropy),),
            _crossent("crossent.poly1_cross_entropy"),
        ),
    )
}


def ops_named(names: list[str] | tuple[str, ...] | None) -> list[Op]:
    """The named ops in registry order (all of them for ``None``); ValueError naming an unknown op."""
    if names is None:
        return list(OPS.values())
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r}; known ops: {', '.join(OPS)}")
    return [op for op in OPS.values() if op.name in names]
