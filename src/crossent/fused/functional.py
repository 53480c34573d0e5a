"""``linear_cross_entropy``: torch 2.13's ``F.linear_cross_entropy``, computed without the logits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

import torch

from crossent import _checks, _dispatch
from crossent._dispatch import Impl
from crossent._reduction import Reduction
from crossent._reduction import resolve as resolve_reduction
from crossent._results import CrossEntropyStats, pack
from crossent._seam import public_op
from crossent.functional import dtensor_entry
from crossent.fused._function import LinearCrossEntropyFunction
from crossent.fused._options import plan
from crossent.ops.cross_entropy import CrossEntropyCall

if TYPE_CHECKING:
    from torch.nn import LinearCrossEntropyOptions

__all__ = ["linear_cross_entropy"]


@overload
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: LinearCrossEntropyOptions | None = None,
    chunk_size: int | None = None,
    workspace_bytes: int | None = None,
    impl: Impl = "auto",
    process_group: torch.distributed.ProcessGroup | None = None,
    normalizer: torch.Tensor | float | None = None,
    reduce_input_grad: bool = True,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: Literal[False] = False,
    shift: int = 0,
    focal_gamma: float = 0.0,
    _logits_dtype: torch.dtype | None = None,
) -> torch.Tensor: ...


@overload
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: LinearCrossEntropyOptions | None = None,
    chunk_size: int | None = None,
    workspace_bytes: int | None = None,
    impl: Impl = "auto",
    process_group: torch.distributed.ProcessGroup | None = None,
    normalizer: torch.Tensor | float | None = None,
    reduce_input_grad: bool = True,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: Literal[True],
    shift: int = 0,
    focal_gamma: float = 0.0,
    _logits_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, CrossEntropyStats]: ...


@public_op("linear_cross_entropy")
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: LinearCrossEntropyOptions | None = None,
    chunk_size: int | None = None,
    workspace_bytes: int | None = None,
    impl: Impl = "auto",
    process_group: torch.distributed.ProcessGroup | None = None,
    normalizer: torch.Tensor | float | None = None,
    reduce_input_grad: bool = True,
    softcap: float | None = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    return_stats: bool = False,
    shift: int = 0,
    focal_gamma: float = 0.0,
    _logits_dtype: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, CrossEntropyStats]:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` without ever holding those logits.

    The result (value, and gradients for ``input``, ``linear_weight`` and ``linear_bias``) equals
    ``crossent.cross_entropy(F.linear(input, linear_weight, linear_bias), target, ...)``. With
    ``x = input @ W.T + b``, class indices ``y``, ``m_n = [y_n != ignore_index]`` and
    ``eps = label_smoothing``::

        l_n = m_n * [(1 - eps) * w[y_n] * (lse_n - x[n, y_n]) + (eps / C) * sum_c w[c] * (lse_n - x[n, c])]

    where ``lse_n = log sum_c exp(x[n, c])``; with class probabilities ``t``
    (``q = (1 - eps) * t + eps / C``)::

        l_n = -sum_c w[c] * q[n, c] * (x[n, c] - lse_n)

    Reductions: ``'none'`` returns ``l``; ``'sum'`` returns ``sum_n l_n``; ``'mean'`` divides that sum by
    ``sum_n m_n * w[y_n]`` for class indices (0/0 = nan when every target is ignored) and by the number
    of positions for probabilities.

    ``softcap``, ``temperature``, ``z_loss`` and ``return_stats`` are those of
    :func:`crossent.cross_entropy`, applied to each chunk's logits: ``z = softcap * tanh(x / softcap) /
    temperature``, the z-loss term, and ``(loss, stats)`` with the per-row log-sum-exp, entropy (both
    differentiable, reaching ``input``, ``linear_weight`` and ``linear_bias``), z-loss and accuracy, all
    from the same pass. ``shift`` is the causal shift of a language model: with hidden states
    ``(B, T, H)`` and labels ``(B, T)``, position ``t`` predicts label ``t + shift`` and the last
    ``shift`` positions of each sequence count as ignored (their loss, ``lse`` and entropy are 0). The
    labels are read through a view and the hidden states in place: nothing is copied to shift them.

    The rows are processed in chunks; only one chunk's logits (and gradient) exist at a time, in a
    workspace of ``workspace_bytes`` or of ``chunk_size`` rows. The default budget is a quarter of the
    weight gradient's size, within [16 MiB, 256 MiB] (``H / 4`` float32 rows for most shapes). Rows
    whose every target is ignored are dropped before any matrix multiply (in eager mode; under
    ``torch.compile`` all rows are kept and masked, since dropping them needs a data-dependent size).

    Memory: for ``'mean'`` and ``'sum'`` this **precomputes the gradients in the forward**: when
    gradients are needed, the forward computes the input, weight and bias gradients chunk by chunk and
    saves them (plus the inputs and two float32 scalars per position: the row max and the sum of
    exponentials); the backward multiplies them by the upstream gradient in place. For ``'none'`` the forward saves only
    the inputs and those scalars, and the backward recomputes each chunk's logits. Under
    ``torch.no_grad()``, or when nothing requires grad, only the loss is computed. float16/bfloat16
    gradients are formed and the weight and bias gradients accumulated in float32, then rounded once
    (on the Triton path the logits gradient is rounded to the logits' dtype, as it overwrites them).

    Args:
        input: hidden states ``(*, H)``; leading dims are flattened (torch itself takes 1 or 2 dims).
        linear_weight: classifier ``(C, H)``, or ``(C, d1, ..., dK, H)`` for a K-dimensional loss.
        target: class indices (int64, or uint8) or probabilities of the logits' shape.
        linear_bias: ``(C,)`` or ``(C, d1, ..., dK)``.
        weight: per-class rescaling ``w``, shape ``(C,)``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: class-index targets equal to it contribute nothing; None means -100. Must be
            None for probabilities.
        label_smoothing: ``eps`` in ``[0, 1]``.
        options: a ``torch.nn.LinearCrossEntropyOptions``, accepted for drop-in use: its
            ``batch_chunk_size`` (when ``chunk_size`` is not given) sets the rows per chunk and its
            ``acc_dtype`` the dtype the weight and bias gradients accumulate in.
        chunk_size: rows per chunk (exclusive with ``workspace_bytes``).
        workspace_bytes: budget for the chunk workspace, in bytes.
        impl: ``'auto'`` | ``'torch'`` | ``'triton'``: each chunk's cross-entropy on crossent's PyTorch
            path, or on the Triton chunk kernel (``'auto'`` on CUDA tensors, when it takes the call:
            ``crossent.triton.unsupported_reason``), which writes the logits gradient over the chunk's
            logits in their dtype. The matmuls are torch's (cuBLAS) either way. There is no native kernel.
        process_group: vocab parallelism: ``linear_weight`` ``(V_r, H)``, ``linear_bias``, ``weight``
            (and probability targets) hold this rank's contiguous slice of the classes (``weight`` may
            also be all ``V`` of them); ``input`` and
            class ids are the same on every rank (``crossent.distributed.vocab_parallel_linear_cross_entropy``).
        normalizer: return ``sum_n l_n / normalizer`` (for ``'mean'`` and ``'sum'``; a number or a
            one-element tensor, never read on the host), e.g. ``crossent.distributed.count_targets``.
        reduce_input_grad: with ``process_group``, all-reduce the input gradient in the backward
            (each rank's share is ``dL/dlogits[V_r] @ W[V_r]``); False when your framework already
            reduces it (Megatron's column-parallel linear does).
        softcap, temperature, z_loss, return_stats: as in :func:`crossent.cross_entropy`.
        shift: predict the label ``shift`` positions later along the dim before ``H`` (an int in
            ``[0, T)``; needs hidden states ``(B, T, H)`` and class-index labels).
        focal_gamma: the focal loss of :func:`crossent.focal_loss` (``gamma``, without ``alpha``):
            ``-(1 - p)**focal_gamma log p`` where cross-entropy has ``-log p``.
        _logits_dtype: set by crossent's autocast policy (float32 under ``torch.autocast``): the dtype the
            loss takes the logits in, while the matmuls run in ``input``'s dtype.

    DTensor: a ``torch.distributed.tensor.DTensor`` classifier sharded on the vocabulary (``Shard(0)``
    of ``(V, H)``) on one mesh dimension, with hidden states replicated (a DTensor or a plain tensor),
    gives the vocab-parallel loss of the local rows over that mesh dimension's process group (as
    ``process_group=`` above), returned as a DTensor replicated on the mesh; gradients reach the
    DTensor arguments with their placements (the hidden states' as ``Partial`` when
    ``reduce_input_grad=False``). Replicated DTensors are computed locally. See ``docs/guide/dtensor.md``.

    Shape:
        ==================================  ======================================  =====================
        input, linear_weight                target                                  output (``'none'``)
        ==================================  ======================================  =====================
        ``(H,)``, ``(C, H)``                ``()``, ``(1,)`` or ``(C,)``            ``()``
        ``(N, H)``, ``(C, H)``              ``(N,)`` or ``(N, C)``                  ``(N,)``
        ``(B, T, ..., H)``, ``(C, H)``      ``(B, T, ...)`` or ``(B, T, ..., C)``   ``(B, T, ...)``
        ``(N, H)``, ``(C, d1..dK, H)``      ``(N, d1..dK)`` or ``(N, C, d1..dK)``   ``(N, d1, ..., dK)``
        ==================================  ======================================  =====================

    Example:
        >>> import torch, crossent
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> crossent.linear_cross_entropy(h, W, torch.tensor([0, -100]), reduction="none")
        tensor([0.4076, 0.0000])
        >>> hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (B, T, H): one sequence of 3
        >>> labels = torch.tensor([[2, 0, 1]])
        >>> crossent.linear_cross_entropy(hidden, W, labels, shift=1, reduction="none")  # t predicts t + 1
        tensor([[0.4076, 0.8620, 0.0000]])
    """
    if (entry := dtensor_entry(input, linear_weight)) is not None:  # the loss of a DTensor classifier's shards
        return entry.linear_cross_entropy(
            linear_cross_entropy,
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=weight,
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            options=options,
            chunk_size=chunk_size,
            workspace_bytes=workspace_bytes,
            impl=impl,
            process_group=process_group,
            normalizer=normalizer,
            reduce_input_grad=reduce_input_grad,
            softcap=softcap,
            temperature=temperature,
            z_loss=z_loss,
            return_stats=return_stats,
            shift=shift,
            focal_gamma=focal_gamma,
            _logits_dtype=_logits_dtype,
        )
    options_ = _checks.logit_options("linear_cross_entropy", softcap, temperature, z_loss, return_stats)
    if focal_gamma != 0.0:
        _checks.focal_arguments("linear_cross_entropy", input, target, focal_gamma, "focal_gamma")
        options_ = options_._replace(focal_gamma=float(focal_gamma))
    if process_group is not None:
        if options is not None or workspace_bytes is not None or impl == "triton":
            raise ValueError(
                "linear_cross_entropy(process_group=...) takes chunk_size only (no options, workspace_bytes or Triton)"
            )
        from crossent.distributed import vocab_parallel_linear_cross_entropy

        return vocab_parallel_linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=weight,
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            process_group=process_group,
            normalizer=normalizer,
            reduce_input_grad=reduce_input_grad,
            chunk_size=chunk_size,
            softcap=softcap,
            temperature=temperature,
            z_loss=z_loss,
            return_stats=return_stats,
            shift=shift,
            focal_gamma=focal_gamma,
        )
    shapes = _checks.linear_cross_entropy_arguments(input, linear_weight, target, linear_bias, weight, ignore_index)
    reduction = resolve_reduction(reduction)
    _checks.check_normalizer(normalizer, reduction, "linear_cross_entropy")
    _checks.causal_shift(shift, input, shapes.probabilities, "linear_cross_entropy")

    n, c, s = shapes.rows, shapes.num_classes, shapes.positions
    if input.dim() > 2:  # crossent's extension: the call stands for logits (N, C)
        logits_shape: tuple[int, ...] = (n, c)
        target = target.reshape(n, c) if shapes.probabilities else target.reshape(n)
    else:
        logits_shape = shapes.logits
    # under autocast the loss sees the logits in float32 while the matmuls run in the autocast dtype
    logits = torch.empty(logits_shape, dtype=_logits_dtype or input.dtype, device="meta")
    ignore, eps, weight = _checks.cross_entropy_arguments(
        logits, target, weight, -100 if ignore_index is None else ignore_index, label_smoothing, reduction
    )
    spec = _dispatch.spec_of(
        input,
        options=options_.names,
        probability=shapes.probabilities,
        weight=weight is not None,
        weight_requires_grad=weight is not None and weight.requires_grad,
        target_requires_grad=shapes.probabilities and target.requires_grad,
        label_smoothing=eps,
        reduction=reduction,
        classes=c,
        inner=s,
    )
    backend = _dispatch.resolve("linear_cross_entropy", impl, input.device, spec)

    grad_tensors = [input, linear_weight, linear_bias] + ([target, weight] if shapes.probabilities else [])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in grad_tensors)
    call = CrossEntropyCall(
        reduction, ignore, eps, shapes.probabilities, gradient_expected=needs_grad, options=options_
    )
    h = input.reshape(n, shapes.in_features)
    w = linear_weight.reshape(c * s, shapes.in_features)
    opts = plan(
        call,
        h,
        w,
        c,
        tuple(t.dtype for t in (target, weight) if shapes.probabilities and t is not None),
        chunk_size=chunk_size if chunk_size is not None else getattr(options, "batch_chunk_size", None),
        workspace_bytes=workspace_bytes,
        acc_dtype=getattr(options, "acc_dtype", None),
        logits_dtype=_logits_dtype,
        # without classes every row is ignored, yet smoothing makes each loss nan: keep them
        drop_ignored=not shapes.probabilities and c > 0 and not torch.compiler.is_compiling(),
        backend=backend,
    )
    b = linear_bias.reshape(c * s) if linear_bias is not None else None
    t = target.reshape(n, c, s) if shapes.probabilities else target.reshape(n, s)[shift:]
    valid = causal_positions(n, input.shape[-2], shift, input.device) if shift else None
    out = LinearCrossEntropyFunction.apply(h, w, b, t, weight, normalizer, opts, valid)
    batch = () if input.dim() == 1 else (*shapes.batch, *shapes.out_features)
    return pack(out, shapes.probabilities, reduction == "none", lambda r: unshift(r, shift).reshape(batch))


def causal_positions(rows: int, length: int, shift: int, device: torch.device) -> torch.Tensor:
    """``(rows - shift, 1)``: whether row ``n`` (position ``n % length`` of its sequence) has a label
    ``shift`` positions later in the same sequence."""
    return (torch.arange(rows - shift, device=device) % length < length - shift).unsqueeze(1)


def unshift(per_row: torch.Tensor, shift: int) -> torch.Tensor:
    """Per-row values of the ``rows - shift`` predicting rows, with zeros for the last ``shift`` rows."""
    if not shift:
        return per_row
    return torch.cat([per_row, per_row.new_zeros(shift, *per_row.shape[1:])])
