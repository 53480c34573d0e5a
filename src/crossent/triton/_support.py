"""What the Triton kernels support: the dispatcher asks ``unsupported_reason`` before choosing them.

Option keys read (others are ignored; an empty dict means default options):
    every op:          "dtype" (torch.dtype of the input)
    cross_entropy:     "weight_requires_grad" (probability targets only; the kernels do not
                       differentiate the class weight)
    binary_cross_entropy(_with_logits): "weight_requires_grad"
    linear_cross_entropy: "softcap", "z_loss" (truthy values are not supported by the chunk kernel)
Everything else of the PyTorch path (weight, ignore_index, label smoothing with weights,
probability targets, every reduction, K-dim and unbatched inputs, inplace_backward) is supported.
"""

from __future__ import annotations

import torch

from crossent.triton._common import FLOAT_DTYPES

SUPPORTED_OPS: tuple[str, ...] = (
    "cross_entropy",
    "nll_loss",
    "log_softmax",
    "softmax",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "linear_cross_entropy",
)


def unsupported_reason(op: str, options: dict[str, object]) -> str | None:
    """Why the Triton kernel of ``op`` cannot run with ``options``, or None when it can."""
    if op not in SUPPORTED_OPS:
        return f"no Triton kernel for {op}"
    dtype = options.get("dtype")
    if isinstance(dtype, torch.dtype) and dtype not in FLOAT_DTYPES:
        return f"the Triton kernels take float16, bfloat16, float32 or float64 input, not {dtype}"
    if options.get("weight_requires_grad") and op in (
        "cross_entropy",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
    ):
        return "the Triton kernels do not differentiate the weight"
    if op == "linear_cross_entropy":
        return "crossent.linear_cross_entropy does not call the Triton chunk kernel yet"
    return None
