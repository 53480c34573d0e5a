"""What the native kernels support: the dispatcher asks ``unsupported_reason`` before choosing them."""

from __future__ import annotations

from crossent._dispatch import OPS, CallSpec, Op
from crossent.native.kernels import DTYPES

NATIVE_OPS: tuple[Op, ...] = tuple(op for op in OPS if op != "linear_cross_entropy")


def unsupported_reason(op: Op, spec: CallSpec) -> str | None:
    """Why the native kernel of ``op`` cannot run the call ``spec``, or None when it can."""
    if op not in NATIVE_OPS:
        return f"no native kernel for {op}"
    if spec.dtype not in DTYPES:
        return f"the native kernels take float32, bfloat16 or float16, not {spec.dtype}"
    if not spec.same_dtype:
        return "the native kernels take operands of one dtype"
    if spec.weight_requires_grad:
        return "the native kernels do not differentiate the weight"
    if spec.target_requires_grad and op == "cross_entropy":
        return "the native kernels do not differentiate probability targets"
    if op in ("cross_entropy", "nll_loss", "log_softmax", "softmax"):
        if spec.inner != 1:
            return "the native kernels normalise along the last dim"
        if spec.classes == 0:
            return "no classes"
    modulated = [name for name in spec.options if name in ("focal_gamma", "poly_epsilon")]
    if modulated and (spec.probability or spec.label_smoothing > 0):
        return f"the native kernels take {', '.join(modulated)} for class indices without label smoothing only"
    if not spec.repeating:
        return "the native kernels take weights that broadcast over leading dims only"
    return None
