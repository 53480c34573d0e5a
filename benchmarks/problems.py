"""The inputs of each benchmark case, drawn from a seed so that a fresh process rebuilds them bit for bit.

Values are drawn in float32 on the CPU and then cast, so the float32 and bfloat16 cases of a shape
hold the same numbers up to rounding, and every device sees the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .shapes import LinearShape, LogitsShape

IGNORE_INDEX = -100


@dataclass
class Problem:
    """The tensors one case feeds to every implementation.

    ``differentiable`` names the leaves whose gradients are measured and checked. ``grad_output`` is
    the upstream gradient for ops whose output is not a scalar (``None`` for scalar losses).
    """

    tensors: dict[str, torch.Tensor]
    differentiable: tuple[str, ...]
    grad_output: torch.Tensor | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def in_float64(self) -> Problem:
        """The same values in float64, as fresh leaves: the inputs of the ground truth."""
        tensors = {
            name: tensor.detach().double().requires_grad_(name in self.differentiable)
            if tensor.is_floating_point()
            else tensor
            for name, tensor in self.tensors.items()
        }
        grad_output = None if self.grad_output is None else self.grad_output.double()
        return Problem(tensors, self.differentiable, grad_output)


ProblemFactory = Callable[..., Problem]


def class_logits(
    shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int, *, ignored_fraction: float = 0.0
) -> Problem:
    """Standard-normal logits and uniform class indices, ``ignored_fraction`` of them ``ignore_index``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape.rows, shape.classes, generator=generator)
    target = _class_indices(shape.rows, shape.classes, ignored_fraction, generator)
    return Problem({"input": _leaf(logits, dtype, device), "target": target.to(device)}, ("input",))


def class_log_probs(shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Log-probabilities (log-softmax of standard-normal logits) and uniform class indices: nll_loss."""
    generator = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(shape.rows, shape.classes, generator=generator).log_softmax(-1)
    target = _class_indices(shape.rows, shape.classes, 0.0, generator)
    return Problem({"input": _leaf(log_probs, dtype, device), "target": target.to(device)}, ("input",))


def logits_with_upstream(shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Standard-normal logits and upstream gradient: log_softmax and softmax, whose output is ``(N, C)``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape.rows, shape.classes, generator=generator)
    upstream = torch.randn(shape.rows, shape.classes, generator=generator)
    return Problem({"input": _leaf(logits, dtype, device)}, ("input",), upstream.to(device=device, dtype=dtype))


def binary_logits(shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Standard-normal logits and soft targets uniform in [0, 1]: binary_cross_entropy_with_logits."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape.rows, shape.classes, generator=generator)
    target = torch.rand(shape.rows, shape.classes, generator=generator)
    return Problem({"input": _leaf(logits, dtype, device), "target": target.to(device, dtype)}, ("input",))


def binary_probs(shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Probabilities (sigmoid of standard-normal logits) and soft targets: binary_cross_entropy."""
    generator = torch.Generator().manual_seed(seed)
    probs = torch.randn(shape.rows, shape.classes, generator=generator).sigmoid()
    target = torch.rand(shape.rows, shape.classes, generator=generator)
    return Problem({"input": _leaf(probs, dtype, device), "target": target.to(device, dtype)}, ("input",))


def distributions(shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Log-probabilities as input and probabilities as target, each a softmax of normal logits: kl_div."""
    generator = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(shape.rows, shape.classes, generator=generator).log_softmax(-1)
    target = torch.randn(shape.rows, shape.classes, generator=generator).softmax(-1)
    return Problem({"input": _leaf(log_probs, dtype, device), "target": target.to(device, dtype)}, ("input",))


def soft_labels(shape: LogitsShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Standard-normal logits and class probabilities (a softmax of normal logits), as mixup makes them."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape.rows, shape.classes, generator=generator)
    target = torch.randn(shape.rows, shape.classes, generator=generator).softmax(-1)
    return Problem({"input": _leaf(logits, dtype, device), "target": target.to(device, dtype)}, ("input",))


def linear(shape: LinearShape, dtype: torch.dtype, device: torch.device, seed: int) -> Problem:
    """Hidden states, classifier and class indices with ``shape.ignored_fraction`` ignored.

    The classifier is scaled by 1/sqrt(hidden) so that the logits are standard normal, like those of
    a freshly initialised language-model head.
    """
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(shape.tokens, shape.hidden, generator=generator)
    classifier = torch.randn(shape.vocab, shape.hidden, generator=generator) / math.sqrt(shape.hidden)
    target = _class_indices(shape.tokens, shape.vocab, shape.ignored_fraction, generator)
    tensors = {
        "input": _leaf(hidden, dtype, device),
        "linear_weight": _leaf(classifier, dtype, device),
        "target": target.to(device),
    }
    return Problem(tensors, ("input", "linear_weight"))


def _class_indices(rows: int, classes: int, ignored_fraction: float, generator: torch.Generator) -> torch.Tensor:
    target = torch.randint(0, classes, (rows,), generator=generator)
    ignored = torch.randperm(rows, generator=generator)[: round(rows * ignored_fraction)]
    target[ignored] = IGNORE_INDEX
    return target


def _leaf(values: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return values.to(device=device, dtype=dtype).requires_grad_(True)
