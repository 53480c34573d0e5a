"""Scale a gradient computed during the forward by the incoming grad_output, in place.

The forward of a reduced loss writes d(loss)/dx for grad_output = 1. Backward multiplies by the
actual grad_output; the factor is read on the device and programs return early when it is
exactly 1 (the usual ``loss.backward()``), so that case costs one launch and no memory traffic,
and no host synchronisation is needed to find out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from crossent.ops._layout import accumulation_dtype as acc_dtype
from crossent.triton._common import launch, tl_dtype, tuning


@triton.jit
def _scale_kernel(
    g_ptr, g_sn, g_sc, g_ss, f_ptr, C, S,
    BLOCK: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    f = tl.load(f_ptr).to(ACC)
    if f != 1.0:
        row = tl.program_id(0).to(tl.int64)
        n = row // S
        pos = row - n * S
        cols = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < C
        ptrs = g_ptr + n * g_sn + pos * g_ss + cols * g_sc
        g = tl.load(ptrs, mask=mask, other=0.0).to(ACC)
        tl.store(ptrs, g * f, mask=mask)


@torch.library.custom_op("crossent_triton::scale_", mutates_args=("grad",))
def scale_(grad: Tensor, factor: Tensor) -> None:
    """grad *= factor for an (N, C, S) ``grad`` and a 0-d ``factor``; no traffic when factor == 1."""
    N, C, S = grad.shape
    block = min(triton.next_power_of_2(max(C, 1)), tuning(grad.device).elementwise_block)
    launch(
        _scale_kernel,
        (N * S, triton.cdiv(C, block)),
        g_ptr=grad, g_sn=grad.stride(0), g_sc=grad.stride(1), g_ss=grad.stride(2),
        f_ptr=factor, C=C, S=S, BLOCK=block, ACC=tl_dtype(acc_dtype(grad.dtype, factor.dtype)),
        num_warps=4,
    )  # fmt: skip


@scale_.register_fake
def _scale_fake(grad: Tensor, factor: Tensor) -> None:
    return None
