"""Largest absolute error of an implementation's value and gradients against a float64 ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ops import Call, Loss
from .problems import Problem
from .steps import Steps


@dataclass(frozen=True)
class Truth:
    """The reference op's value and input gradients, computed in float64 from the case's inputs."""

    value: torch.Tensor
    grads: dict[str, torch.Tensor]


def ground_truth(reference: Loss, call: Call, problem: Problem) -> Truth:
    """Torch's own op on the inputs cast to float64: bfloat16 and float32 inputs convert exactly."""
    exact = problem.in_float64()
    output = call(reference, exact)
    output.backward(exact.grad_output)
    return Truth(output.detach(), {name: _leaf_grad(exact, name) for name in exact.differentiable})


def max_abs_errors(steps: Steps, truth: Truth) -> tuple[float, float]:
    """``max |value - truth|`` and ``max |gradient - truth|`` over every differentiable input.

    Raises RuntimeError when the implementation silently overwrites a tensor its caller holds:
    one of the problem's tensors (its timings, and those of every implementation after it, would
    be of different inputs), or its own output during backward.
    """
    problem = steps.problem
    steps.reset()
    untouched = {name: tensor.detach().clone() for name, tensor in problem.tensors.items()}
    output = steps.forward()
    value = output.detach().clone()
    steps.backward(output)
    value_error = _max_abs_difference("value", value, truth.value)
    grad_error = max(_max_abs_difference(name, _gradient(steps, name), truth.grads[name]) for name in truth.grads)
    if not torch.equal(output.detach(), value):
        raise RuntimeError("backward overwrote the output")
    for name, original in untouched.items():
        if not torch.equal(problem[name].detach(), original):
            raise RuntimeError(f"it overwrote its input {name!r}")
    return value_error, grad_error


def _leaf_grad(problem: Problem, name: str) -> torch.Tensor:
    grad = problem[name].grad
    assert grad is not None, f"torch's reference left no gradient for {name!r}"  # a harness bug, not input
    return grad


def _gradient(steps: Steps, name: str) -> torch.Tensor:
    grad = steps.gradient(name)
    if grad is None:
        raise RuntimeError(f"no gradient reached {name!r}")
    return grad


def _max_abs_difference(name: str, actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.shape != expected.shape:
        raise RuntimeError(f"{name} has shape {tuple(actual.shape)}, torch's has {tuple(expected.shape)}")
    return (actual.detach().double() - expected).abs().max().item()
