"""One comparison helper: value, shape, dtype and every gradient, against an oracle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def _clone_args(args: Sequence[Any], grad_args: Sequence[int]) -> list[Any]:
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            a = a.detach().clone().requires_grad_(i in grad_args)
        out.append(a)
    return out


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float, rtol: float) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def check_against(
    ours: Callable[..., torch.Tensor],
    oracle: Callable[..., torch.Tensor],
    args: Sequence[Any],
    kwargs: dict[str, Any] | None = None,
    grad_args: Sequence[int] = (0,),
    atol: float = 1e-12,
    rtol: float = 1e-10,
    grad_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Call both with the same inputs; compare outputs and the gradient of every ``grad_args`` input.

    The upstream gradient is random (not ones), so per-element VJPs are checked for 'none'.
    """
    kwargs = kwargs or {}
    a_args, b_args = _clone_args(args, grad_args), _clone_args(args, grad_args)
    out_a = ours(*a_args, **kwargs)
    out_b = oracle(*b_args, **kwargs)
    assert_close(out_a, out_b, "value", atol, rtol)
    if grad_args and out_b.requires_grad:
        g = grad_output if grad_output is not None else torch.rand_like(out_b)
        inputs_a = [a_args[i] for i in grad_args]
        inputs_b = [b_args[i] for i in grad_args]
        grads_a = torch.autograd.grad(out_a, inputs_a, g, allow_unused=True)
        grads_b = torch.autograd.grad(out_b, inputs_b, g, allow_unused=True)
        for i, ga, gb in zip(grad_args, grads_a, grads_b, strict=True):
            assert (ga is None) == (gb is None), f"grad of arg {i}: one side is None"
            if gb is not None:
                assert_close(ga, gb, f"grad of arg {i}", atol, rtol)
    return out_a
