"""``vocab_parallel_linear_cross_entropy``: fused linear + cross-entropy with the classifier sharded by class."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from crossent import _checks
from crossent.distributed import _consensus, _validate
from crossent.distributed._group import resolve
from crossent.distributed._linear import CALLER, VocabParallelLinearCrossEntropyFunction
from crossent.fused._options import FusedOptions, chunk_rows, default_workspace_bytes, workspace_row_bytes
from crossent.ops._layout import accumulation_dtype
from crossent.ops.cross_entropy import Shard

__all__ = ["vocab_parallel_linear_cross_entropy"]


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    linear_bias: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    process_group: dist.ProcessGroup,
    normalizer: torch.Tensor | float | None = None,
    reduce_input_grad: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` when each rank holds a slice of the classes.

    Rank ``r`` holds the classifier rows of classes ``[o_r, o_r + V_r)`` (ranks in order, widths free):
    ``linear_weight (V_r, H)``, ``linear_bias (V_r,)`` and class ``weight (V_r,)``; ``input`` and
    class-index targets are the same on every rank. Every rank returns the loss, and the gradients of
    its shard, of ``crossent.cross_entropy(input @ W.T + b, target, ...)`` on the whole classifier::

        l_n = m_n [(1 - eps) w[y_n] (lse_n - x[n, y_n]) + (eps / V) sum_c w[c] (lse_n - x[n, c])]
        l_n = -sum_c w[c] q[n, c] log_softmax(x)[n, c],    q = (1 - eps) t + eps / V   (probabilities)

    with ``x = input @ W.T + b`` over all ``V`` classes of all ranks, never formed: each rank computes
    its ``N x V_r`` logits a chunk of rows at a time.

    Reductions: ``'none'``, ``'sum'``, ``'mean'`` (divides by ``W = sum_n m_n w[y_n]`` for class
    indices, by ``N`` for probabilities); with ``normalizer`` the loss is ``sum_n l_n / normalizer``.

    Communication: the forward makes three collectives, as :func:`vocab_parallel_cross_entropy`
    (the fixed-size agreement table, an all-reduce MAX of ``N`` values, an all-reduce SUM of 2 to 5
    values per row). The backward gives ``linear_weight``, ``linear_bias`` and the probability
    target and class weight their exact gradients locally; the gradient of ``input`` is a sum over
    ranks of ``dL/dlogits[V_r] @ W[V_r]``. With ``reduce_input_grad=True`` the backward all-reduces
    it (one SUM of ``N x H`` float32 values, float64 for float64 inputs, plus one flag per rank), so
    every rank holds the full gradient. Pass ``False`` when your framework reduces the input
    gradient of the vocab-parallel projection itself (Megatron's column-parallel linear does): each
    rank then returns its share, and reducing in both places would multiply the gradient by the
    group size. The backward is first-order: ``create_graph=True`` raises ``RuntimeError``, and a
    rank that asks for it still joins the input-gradient all-reduce, so its peers raise
    :class:`crossent.distributed.PeerError` instead of waiting.

    Agreement: as for :func:`vocab_parallel_cross_entropy`, a bad argument on one rank raises there
    the exception class torch's ``linear`` and ``cross_entropy`` raise for it (``ValueError`` for a
    bad ``chunk_size``, ``TypeError`` for a ``reduce_input_grad`` that is not a bool) and
    ``PeerError`` on the others, and every rank checks that all agree on the options, the dtypes,
    the class-index targets (by a 64-bit digest), the shape of ``input`` (so the hidden size ``H``
    too), ``reduce_input_grad`` and whether the input gradient is computed (``input.requires_grad``
    with grad mode on), before any collective whose size depends on them. Not compared: the values
    of ``input`` (only its shape and dtype) and the sharded tensors.

    Args:
        input: hidden states ``(*, H)`` (or ``(H,)``), identical on every rank.
        linear_weight: this rank's classifier rows ``(V_r, H)``, same dtype as ``input``.
        target: global class ids ``(*)`` (int64 or uint8), identical on every rank; or this rank's slice
            of the class probabilities ``(*, V_r)``.
        linear_bias: this rank's bias slice ``(V_r,)``.
        weight: this rank's slice of the class weights ``(V_r,)``.
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        ignore_index: class ids equal to it contribute nothing; None means -100 (as in torch's
            ``linear_cross_entropy``). Must be None or negative for probabilities.
        label_smoothing: ``eps`` in ``[0, 1]``, spread over all ``V`` classes.
        process_group: the ranks that share the class dimension.
        normalizer: divide the summed loss by this number or one-element tensor (never read on the host).
        reduce_input_grad: all-reduce the input gradient in the backward (see above). Must be the same
            on every rank.
        chunk_size: rows of logits formed at a time (default: as ``crossent.linear_cross_entropy``, a
            workspace of a quarter of the weight gradient, within 16 and 256 MiB).

    Shape:
        ===================  ====================================  ===================
        input                target                                output (``'none'``)
        ===================  ====================================  ===================
        ``(H,)``             ``()`` or ``(V_r,)``                  ``()``
        ``(N, H)``           ``(N,)`` or ``(N, V_r)``              ``(N,)``
        ``(B, T, ..., H)``   ``(B, T, ...)`` or ``(B, T, ..., V_r)``  ``(B, T, ...)``
        ===================  ====================================  ===================

    Example:
        >>> # on each of 2 ranks (torchrun --nproc-per-node 2): the classifier's 5 rows split 3 + 2
        >>> import torch, torch.distributed as dist
        >>> from crossent.distributed import vocab_parallel_linear_cross_entropy
        >>> h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [-1.0, 0.0]])
        >>> rows = W[:3] if dist.get_rank() == 0 else W[3:]  # doctest: +SKIP
        >>> y = torch.tensor([0, 3])  # global class ids
        >>> vocab_parallel_linear_cross_entropy(h, rows, y, process_group=dist.group.WORLD)  # doctest: +SKIP
        tensor(1.1405)
    """
    group = resolve(process_group, CALLER)
    device = group.device_for(input)
    try:
        logits, flat_target, output_shape = _check_linear(input, linear_weight, target, linear_bias, reduce_input_grad)
        call = _validate.check_cross_entropy(
            logits,
            flat_target,
            weight,
            -100 if ignore_index is None else ignore_index,
            reduction,
            label_smoothing,
            normalizer,
            CALLER,
            input.device,
        )
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"{CALLER}: chunk_size must be a positive int, got {chunk_size!r}")
        wants_input_grad = torch.is_grad_enabled() and input.requires_grad
        dtypes = _validate.loss_dtypes(input, call, target, weight)
        mine = _consensus.record(
            _consensus.Call(
                function=CALLER,
                spec=call,
                classes=linear_weight.shape[0],
                shape=tuple(input.shape),
                dtypes=dtypes,
                target=flat_target,
                normalizer=normalizer,
                reduce_input_grad=reduce_input_grad,
                input_grad=wants_input_grad,
            ),
            device,
        )
    except Exception as error:  # reported to the peers through the agreement collective, then re-raised
        _consensus.withdraw(group, error, device)
    layout = _consensus.agree(group, mine, CALLER)
    # the chunks and their workspace as crossent.linear_cross_entropy sizes them
    n, c = logits.shape
    grads = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, linear_weight, linear_bias)
    )
    acc = accumulation_dtype(*(d for d in dtypes if d is not None))
    grad_dtype = accumulation_dtype(linear_weight.dtype)
    workspace = default_workspace_bytes(linear_weight.numel() * grad_dtype.itemsize)
    rows = chunk_rows(n, workspace_row_bytes(c, input.dtype, acc if grads else None), chunk_size, None, workspace)
    opts = FusedOptions(call, c, rows, grad_dtype, input.dtype, drop_ignored=False)  # no host read of the targets
    out: torch.Tensor = VocabParallelLinearCrossEntropyFunction.apply(
        input.reshape(n, input.shape[-1]),
        linear_weight,
        linear_bias,
        flat_target,
        weight,
        normalizer,
        opts,
        group,
        Shard(group.handle, layout.offset, layout.num_classes),
        reduce_input_grad,
    )
    return out.reshape(output_shape) if call.reduction == "none" else out


def _check_linear(
    input: object, linear_weight: object, target: object, linear_bias: object, reduce_input_grad: object
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """The linear layer's own checks; returns meta logits ``(N, V_r)``, the flat target and the output shape."""
    h = _checks.check_tensor(input, CALLER, "input", 1)
    w = _checks.check_tensor(linear_weight, CALLER, "linear_weight", 2)
    t = _checks.check_tensor(target, CALLER, "target", 3)
    if linear_bias is not None:
        linear_bias = _checks.check_tensor(linear_bias, CALLER, "linear_bias", 4)
    if not isinstance(reduce_input_grad, bool):
        raise TypeError(f"{CALLER}: reduce_input_grad must be bool, not {type(reduce_input_grad).__name__}")
    if h.dim() < 1:
        raise RuntimeError(f"expected input with dimensionality 1 or more, got {h.dim()}")
    if w.dim() != 2:
        raise RuntimeError(
            f"{CALLER}: linear_weight must be this rank's classifier rows (V_r, H), got shape {list(w.shape)}"
        )
    if h.shape[-1] != w.shape[1]:
        raise RuntimeError(
            f"{CALLER}: input has {h.shape[-1]} features but linear_weight has {w.shape[1]} (shape {list(w.shape)})"
        )
    _validate.same_device(h.device, linear_weight=w, target=t, linear_bias=linear_bias)
    if linear_bias is not None and tuple(linear_bias.shape) != (w.shape[0],):
        raise RuntimeError(f"{CALLER}: linear_bias must have shape [{w.shape[0]}], got {list(linear_bias.shape)}")
    for name, other in (("linear_weight", w), ("linear_bias", linear_bias)):
        if other is not None and other.dtype != h.dtype:
            raise RuntimeError(
                f"{CALLER}: {name} must have the dtype of input ({_checks.dtype_name(h.dtype)}), "
                f"got {_checks.dtype_name(other.dtype)}"
            )
    batch = tuple(h.shape[:-1])
    n, c = math.prod(batch), w.shape[0]
    if tuple(t.shape) == (*batch, c) and t.is_floating_point():
        flat = t.reshape(n, c)
    elif tuple(t.shape) == batch or (h.dim() == 1 and tuple(t.shape) == (1,)):
        flat = t.reshape(n)
    else:
        raise ValueError(
            f"{CALLER}: target must be class ids of shape {list(batch)} or probabilities of shape "
            f"{[*batch, c]}, got {list(t.shape)}"
        )
    return torch.empty(n, c, dtype=h.dtype, device="meta"), flat, batch
