"""One implementation bound to a case's problem: the two calls the harness times, checks and measures."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from .ops import Call, Loss
from .problems import Problem

Mode = Literal["full", "forward"]
MODES: tuple[Mode, ...] = ("full", "forward")


class Steps:
    """Runs ``call(function, problem)`` as forward+backward (``"full"``) or as a no-grad forward.

    With ``intermediate_inputs``, the differentiable inputs reach the op as the outputs of an
    autograd op, the way logits computed from hidden states do, rather than as the problem's
    leaves: an in-place backward refuses to overwrite a leaf. Each call gets fresh copies, made
    before the clock starts (in :meth:`reset`, or by :meth:`fresh_inputs` for a timed batch of
    calls), so an op that overwrites them leaves the problem as it was.
    """

    def __init__(self, function: Loss, call: Call, problem: Problem, *, intermediate_inputs: bool) -> None:
        self.function = function
        self.call = call
        self.problem = problem
        self.intermediate_inputs = intermediate_inputs
        self._inputs = problem
        self._sunk_grads: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        """Drop the previous call's gradients and, for intermediate inputs, make fresh copies (never timed)."""
        self.start(self.fresh_inputs(1)[0])

    def fresh_inputs(self, calls: int) -> list[Problem]:
        """The inputs of ``calls`` consecutive calls, made before the clock starts.

        Leaves can be reused: dropping their gradients is all a new call needs. Intermediate inputs
        are made anew for each call, since an in-place backward overwrites them.
        """
        if not self.intermediate_inputs:
            return [self.problem] * calls
        return [
            dataclasses.replace(
                self.problem,
                tensors={
                    **self.problem.tensors,
                    **{
                        name: _GradientSink.apply(self.problem[name], self._sunk_grads, name)
                        for name in self.problem.differentiable
                    },
                },
            )
            for _ in range(calls)
        ]

    def start(self, inputs: Problem) -> None:
        """Drop the previous call's gradients, as ``zero_grad(set_to_none=True)`` does, and use ``inputs``.

        Cheap enough to run inside a timed batch of calls: a few attribute writes.
        """
        for name in self.problem.differentiable:
            self.problem[name].grad = None
        self._sunk_grads.clear()
        self._inputs = inputs

    def run(self, mode: Mode) -> torch.Tensor:
        """The output of one call; for ``"full"`` the gradients are then in :meth:`gradient`."""
        if mode == "forward":
            # Inputs still require grad: an implementation must honour grad mode, not requires_grad.
            with torch.no_grad():
                return self.forward()
        output = self.forward()
        self.backward(output)
        return output

    def forward(self) -> torch.Tensor:
        """The output, with its autograd graph when grad mode is on."""
        return self.call(self.function, self._inputs)

    def backward(self, output: torch.Tensor) -> None:
        output.backward(self._inputs.grad_output)

    def gradient(self, name: str) -> torch.Tensor | None:
        """The gradient the last full call computed for the differentiable input ``name``."""
        if self.intermediate_inputs:
            return self._sunk_grads.get(name)
        return self.problem[name].grad


class _GradientSink(torch.autograd.Function):
    """A copy of a leaf whose backward keeps the incoming gradient instead of passing it on.

    Passing it on would end in AccumulateGrad, which copies a gradient that something else still
    references (an in-place backward returns the logits themselves): a logits-sized copy inside
    the timed call that no real model would make.
    """

    @staticmethod
    def forward(ctx: Any, leaf: torch.Tensor, sink: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        ctx.sink, ctx.name = sink, name
        return leaf.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:
        ctx.sink[ctx.name] = grad
        return None, None, None
