"""Rank agreement: before the loss sends anything whose size depends on the input, every rank learns
whether all ranks were called alike and whether any rank rejected its input.

Collectives are safe only if every rank sends a buffer of the same size (gloo aborts a process whose
peer sent another size, NCCL waits for the timeout), and a rank that raises on its own leaves its
peers waiting. So each call starts with one all-reduce MAX of a ``(world, 3 + len(FIELDS))`` int64
table, whatever the arguments: each rank writes its row (failure flag, shard width, class-weight
length, one value per field of :data:`FIELDS`) and the smallest int64 everywhere else, so MAX
delivers every row as its owner wrote it. Every rank then runs the same checks on the same table and raises the same way
(what they raise and compare: ``vocab_parallel_cross_entropy``'s docstring).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from crossent import _checks
from crossent.distributed import _group
from crossent.distributed._group import Group
from crossent.ops.cross_entropy import CrossEntropyCall, Shard

_EMPTY = -(2**63)  # written into the other ranks' rows: below every value, so MAX keeps each row as written
_FAILED, _WIDTH, _WEIGHT = 0, 1, 2  # the first columns of a row, free to differ between ranks; the fields follow
_FIRST_FIELD = 3
_REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True)
class Call:
    """What one rank was asked to compute, as far as the ranks must agree on it."""

    function: str
    spec: CrossEntropyCall
    classes: int  # this rank's shard width: free to differ
    shape: tuple[int, ...]  # input's shape without its class dimension (hidden states: all of it)
    dtypes: tuple[torch.dtype | None, ...]  # of input, of probability targets, of weight (None: absent)
    target: torch.Tensor  # class ids (digested) or this rank's slice of the probabilities (not compared)
    normalizer: torch.Tensor | float | None
    reduce_input_grad: bool = False  # the linear loss's backward all-reduces the input gradient ...
    input_grad: bool = False  # ... when this is True too
    shift: int = 0  # the linear loss's causal shift
    weight_shape: tuple[int, ...] | None = None  # of the class weight: this rank's slice (V_r,) or all of it (V,)


@dataclass(frozen=True)
class Field:
    """One value every rank must agree on, as an int64."""

    name: str  # as error messages name it
    value: Callable[[Call], int | torch.Tensor]
    show: Callable[[int], str] | None = None  # prints any rank's value; None for digests, which it cannot
    note: Callable[[Call], str] = lambda call: ""  # for digests: what this rank has, for the message


def _digest(value: object) -> int:
    """A 64-bit digest of a Python value (its repr), as a signed int64."""
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little", signed=True)


def _bits(x: float) -> int:
    """The float64 bits of ``x`` as an int64: equal values compare equal, bit for bit."""
    return int(struct.unpack("<q", struct.pack("<d", x))[0])


def _show_float(bits: int) -> str:
    return repr(struct.unpack("<d", struct.pack("<q", bits))[0])


def _show_bool(value: int) -> str:
    return str(bool(value))


def _normalizer(call: Call) -> int | torch.Tensor:
    """The normalizer as float64 bits (0 without one); a tensor stays on its device, never read on the host."""
    normalizer = call.normalizer
    if normalizer is None:
        return 0
    if isinstance(normalizer, torch.Tensor):
        return normalizer.detach().reshape(()).to(torch.float64).view(torch.int64)
    return _bits(float(normalizer))


# 64-bit constants, each as the int64 with the same bits
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # 2**64 / golden ratio, odd: spreads the position ids
_SPREAD = 0xD6E8FEB86659FD93 - 2**64  # odd: spreads the class ids
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64  # splitmix64's multipliers


def _shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    """``z >>> k`` on 64-bit words (``>>`` of an int64 tensor copies the sign bit)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer, elementwise: a bijection of 64-bit words that spreads every input bit."""
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def target_digest(target: torch.Tensor) -> torch.Tensor:
    """A 64-bit digest of class-index targets and their positions: a 0-dim int64 tensor on their device.

    ``sum_n mix(t_n * A + n * B) mod 2**64`` over the flattened targets (``n`` from 1), with
    splitmix64's finalizer as ``mix`` and odd constants ``A``, ``B``, computed with int64 tensor ops:
    no host read, a few elementwise passes over the targets. What it guarantees:

    * equal targets give equal digests on every rank, bit for bit (the sum wraps modulo ``2**64``,
      so the order in which a reduction adds the terms does not matter);
    * targets that differ at exactly one position always give different digests (for a fixed ``n``,
      ``t -> mix(t * A + n * B)`` is a bijection, and changing one term of the sum changes the sum);
    * any other difference (swapped targets, several changed ones) goes unnoticed only by chance,
      about once in ``2**64`` for differences that were not constructed for the purpose. It is not
      a cryptographic hash: targets crafted to collide with it can pass.

    The shape of the targets is compared separately (``Call.shape``).
    """
    t = target.reshape(-1).long()
    n = torch.arange(1, t.numel() + 1, dtype=torch.int64, device=t.device)
    return _mix(t * _SPREAD + n * _GOLDEN).sum()


FIELDS: tuple[Field, ...] = (
    Field("the function called", lambda c: _digest(c.function), note=lambda c: f"this rank called {c.function}"),
    Field(
        "the shape of input without its class dimension",
        lambda c: _digest(c.shape),
        note=lambda c: f"this rank's is {list(c.shape)}",
    ),
    Field(
        "the kind of target", lambda c: int(c.spec.probability), lambda v: ("class indices", "class probabilities")[v]
    ),
    Field("reduction", lambda c: _REDUCTIONS.index(c.spec.reduction), lambda v: repr(_REDUCTIONS[v])),
    Field("ignore_index", lambda c: c.spec.ignore_index, str),
    Field("label_smoothing", lambda c: _bits(c.spec.label_smoothing), _show_float),
    Field("whether weight is given", lambda c: int(c.dtypes[2] is not None), lambda v: ("None", "weight")[v]),
    Field(
        "the dtypes of input, of probability targets and of weight",
        lambda c: _digest(c.dtypes),
        note=lambda c: f"this rank's are ({', '.join(str(d).removeprefix('torch.') for d in c.dtypes)})",
    ),
    Field("whether normalizer is given", lambda c: int(c.normalizer is not None), lambda v: ("None", "normalizer")[v]),
    Field("the value of normalizer (as float64)", _normalizer, _show_float),
    Field("softcap", lambda c: _bits(c.spec.options.softcap or 0.0), lambda v: "None" if v == 0 else _show_float(v)),
    Field("temperature", lambda c: _bits(c.spec.options.temperature), _show_float),
    Field("z_loss", lambda c: _bits(c.spec.options.z_loss), _show_float),
    Field("return_stats", lambda c: int(c.spec.options.extras), _show_bool),
    Field("shift", lambda c: c.shift, str),
    Field("focal_gamma", lambda c: _bits(c.spec.options.focal_gamma), _show_float),
    Field("reduce_input_grad", lambda c: int(c.reduce_input_grad), _show_bool),
    Field(
        "whether the input gradient is computed (input.requires_grad, with grad mode on)",
        lambda c: int(c.input_grad),
        _show_bool,
    ),
    Field(
        "the class-index targets (global class ids, identical on every rank)",
        lambda c: 0 if c.spec.probability else target_digest(c.target),
        note=lambda c: "compared by a 64-bit digest of the class ids and their positions",
    ),
)
_COLUMNS = _FIRST_FIELD + len(FIELDS)


T = TypeVar("T")


def agree_on(
    group: Group, device: torch.device, caller: str, validate: Callable[[], tuple[Call, T]]
) -> tuple[Shard, T]:
    """``validate()`` this rank's arguments, then the agreement all-reduce and the same checks on every rank.

    Returns where this rank's classes sit (the table's shard widths give its offset and ``V``), and
    what ``validate`` returned besides the :class:`Call`. A rank whose ``validate`` raises joins the
    all-reduce with its failure flag raised, so that its peers raise ``PeerError`` rather than wait for
    it, then re-raises.
    """
    try:
        call, result = validate()
        row = _row(call, device)
    except Exception:
        row = torch.full((_COLUMNS,), _EMPTY, dtype=torch.int64, device=device)
        row[_FAILED], row[_WIDTH] = 1, 0
        _exchange(group, row)
        raise
    table = _exchange(group, row)
    widths = table[:, _WIDTH]
    shard = Shard(group.handle, offset=widths[: group.rank].sum(), num_classes=widths.sum())
    _group.check_peers(table[:, _FAILED], caller, _group.REJECTED)
    _check_weight_lengths(table, call, caller, group.rank)
    if not call.spec.probability:
        # V stays a 0-dim tensor: read on the host for CPU tensors only (a device-side assert elsewhere)
        _checks.class_targets(call.target, shard.num_classes, call.spec.ignore_index)  # type: ignore[arg-type]
    if torch.compiler.is_compiling():
        return shard, result
    if _group.reads_on_host(table):
        rows = table.tolist()
        for column, field in enumerate(FIELDS, start=_FIRST_FIELD):
            values = [row[column] for row in rows]
            if any(v != values[0] for v in values):
                raise _disagreement(caller, field, values, call, group.rank)
    else:
        torch._assert_async(
            (table[:, _FIRST_FIELD:] == table[0, _FIRST_FIELD:]).all(),
            f"{caller}: the ranks of the process group were called with different shapes, options or targets",
        )
    return shard, result


def _row(call: Call, device: torch.device) -> torch.Tensor:
    """This rank's row of the table, on ``device`` (tensor fields are written there, never read on the host)."""
    values: list[int] = [0, call.classes, _weight_length(call)]
    on_device: dict[int, torch.Tensor] = {}
    for column, field in enumerate(FIELDS, start=_FIRST_FIELD):
        value = field.value(call)
        if isinstance(value, torch.Tensor):
            on_device[column] = value
            value = 0
        values.append(value)
    # a host tensor copied without blocking: a blocking copy to an accelerator would synchronize
    row = torch.tensor(values, dtype=torch.int64).to(device, non_blocking=True)
    for column, value in on_device.items():
        row[column] = value.to(device, non_blocking=True)
    return row


def _weight_length(call: Call) -> int:
    """The class weight's length: the shard width without one (nothing to check), -1 when it is not 1-D."""
    shape = call.weight_shape
    if shape is None:
        return call.classes
    return shape[0] if len(shape) == 1 else -1


def _check_weight_lengths(table: torch.Tensor, call: Call, caller: str, rank: int) -> None:
    """Each rank's class weight is its slice ``(V_r,)`` or all ``V`` weights ``(V,)``: ``RuntimeError`` on a
    rank whose weight is neither, :class:`PeerError` on the others. The lengths are told apart after the
    exchange, which gives ``V``; where ``V_r == V`` (one rank holds every class) they are the same vector.
    """
    if torch.compiler.is_compiling():
        return
    widths, lengths = table[:, _WIDTH], table[:, _WEIGHT]
    classes = widths.sum()
    bad = (lengths != widths) & (lengths != classes)
    shape = list(call.weight_shape or ())
    if _group.reads_on_host(table):
        if bool(bad[rank]):
            raise RuntimeError(
                f"{caller}: weight must be this rank's slice of the class weights, of shape [{call.classes}], "
                f"or the weights of all {int(classes)} classes, of shape [{int(classes)}], but got weight tensor "
                f"of shape: {shape}"
            )
    else:
        torch._assert_async(
            ~bad[rank],
            f"{caller}: weight must be this rank's slice of the class weights, of shape [{call.classes}], or the "
            f"weights of all classes of all ranks (V,), but got weight tensor of shape: {shape}",
        )
    _group.check_peers(bad, caller, _group.REJECTED)


def _exchange(group: Group, row: torch.Tensor) -> torch.Tensor:
    """Every rank's row: the ``(world, columns)`` table after the all-reduce MAX."""
    table = torch.full((group.size, _COLUMNS), _EMPTY, dtype=torch.int64, device=row.device)
    table[group.rank] = row
    dist.all_reduce(table, op=dist.ReduceOp.MAX, group=group.handle)
    return table


def _disagreement(caller: str, field: Field, values: list[int], call: Call, rank: int) -> ValueError:
    if field.show is not None:
        detail = f"the ranks have [{', '.join(field.show(v) for v in values)}]"
    else:
        differ = [r for r, v in enumerate(values) if v != values[0]]
        detail = f"rank(s) {differ} differ from rank 0 (this is rank {rank}; {field.note(call)})"
    return ValueError(f"{caller}: every rank of the process group must agree on {field.name}, but {detail}")
