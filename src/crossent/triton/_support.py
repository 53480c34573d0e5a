"""What the Triton kernels support: the dispatcher asks ``unsupported_reason`` before choosing them.

Everything of the PyTorch path (weight, ignore_index, label smoothing with weights, probability
targets, every reduction, K-dim and unbatched inputs, inplace_backward) is supported, except what
``unsupported_reason`` names. The fused linear loss runs each chunk's cross-entropy on the chunk
kernel (``linear_cross_entropy_chunk``) with the same exceptions, and none of its gradients for
probability targets.
"""

from __future__ import annotations

from crossent._dispatch import OPS, CallSpec, Op
from crossent.triton._common import FLOAT_DTYPES

SUPPORTED_OPS: tuple[Op, ...] = OPS


def unsupported_reason(op: Op, spec: CallSpec) -> str | None:
    """Why the Triton kernel of ``op`` cannot run the call ``spec``, or None when it can."""
    if op not in SUPPORTED_OPS:
        return f"no Triton kernel for {op}"
    if spec.dtype not in FLOAT_DTYPES:
        return f"the Triton kernels take float16, bfloat16, float32 or float64 input, not {spec.dtype}"
    if spec.weight_requires_grad and op in (
        "cross_entropy",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
        "linear_cross_entropy",
    ):
        return "the Triton kernels do not differentiate the weight"
    if spec.target_requires_grad and op == "linear_cross_entropy":
        return "the fused Triton loss does not differentiate probability targets"
    if spec.options:
        return f"the Triton kernels do not take {', '.join(spec.options)}"
    if spec.loss_dtype not in (None, spec.dtype):
        return f"the Triton kernels return the loss in the input's dtype ({spec.dtype}), not {spec.loss_dtype}"
    return None
