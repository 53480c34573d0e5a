"""Rank agreement: every rank learns whether any rank's input is bad before it could wait forever.

A vocab-parallel loss is correct only if all ranks of the group call it with matching arguments,
and a rank that raises on its own leaves the others blocked in the next collective until the
process-group timeout. So each rank writes one record into a small header that rides at the front
of the first collective (the all-reduce MAX of the row maxima): whether its own validation failed,
its shard width, its number of positions, and a digest of its targets and options. Each field
is non-negative and only its owner writes it (the others write 0), so MAX delivers every record to
every rank. Every rank then runs the same checks on the same header and raises the same way, and
the header also gives the shard layout (uneven widths welcome) without a collective of its own.

Ranks that disagree about the number of positions send buffers of different lengths. gloo then
aborts the collective ("Received data size doesn't match expected size"); NCCL waits for the
process-group timeout. The header comes first so that a rank whose collective still completes finds
the disagreement there and raises rather than return a wrong loss.

Checks read the header on the host for CPU tensors (the values are there already); on accelerators
they become device-side asserts, which fire on every rank alike without a host sync.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from crossent.distributed._group import Group

# The first collective runs in float64 whatever the input dtype: a rank whose input was rejected
# (perhaps for its dtype) still sends a buffer of the same size, and every integer field is exact.
BUFFER_DTYPE = torch.float64
# record fields: error flag, shard width, positions, digest
_FIELDS = 4
_DIGEST_MASK = (1 << 24) - 1
_SPREAD = 2654435761  # Knuth's multiplicative-hash constant: spreads position ids over the 24-bit ring


class PeerError(RuntimeError):
    """Raised on every rank when another rank of the process group rejected its input.

    The rank with the bad input raises the specific error (and prints its traceback); the others
    raise this one at the same point, so that no rank waits in a collective for a peer that left.
    """


def reads_on_host(t: torch.Tensor) -> bool:
    """Whether checks read ``t`` on the host (CPU tensors: free) or become device-side asserts (no sync)."""
    return t.device.type == "cpu"


@dataclass(frozen=True)
class Layout:
    """Where this rank's classes sit in the global class dimension (0-dim int64 tensors)."""

    offset: torch.Tensor  # first global class id of this rank's shard
    num_classes: torch.Tensor  # V, the global number of classes


def digest(options: tuple[object, ...], target: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """A 24-bit hash of ``options`` and of the class-index ``target`` (None: options only).

    ``sum_n (t_n * c_n) mod 2**24`` with odd multipliers ``c_n``: a change of one target always
    changes it, and integer arithmetic makes it bitwise identical on ranks with equal inputs.
    """
    seed = zlib.crc32(repr(options).encode()) & _DIGEST_MASK
    if target is None or target.numel() == 0:
        return torch.full((), seed, dtype=torch.int64, device=device)
    t = target.reshape(-1).long()
    spread = (torch.arange(t.numel(), device=t.device) * _SPREAD * 2 + 1) & _DIGEST_MASK
    terms = (t & _DIGEST_MASK) * spread & _DIGEST_MASK
    return (terms.sum() + seed) & _DIGEST_MASK


def header(group: Group, failed: bool, num_classes: int, positions: int, digest: torch.Tensor) -> torch.Tensor:
    """This rank's record at row ``group.rank`` of a zero ``(world, 4)`` float64 table, flattened."""
    table = torch.zeros(group.size, _FIELDS, dtype=BUFFER_DTYPE, device=digest.device)
    # scalar fills, not a host tensor: copying one to an accelerator would synchronize the stream
    table[group.rank, 0] = float(failed)
    table[group.rank, 1] = num_classes
    table[group.rank, 2] = positions
    table[group.rank, 3] = digest
    return table.reshape(-1)


def header_size(group: Group) -> int:
    return group.size * _FIELDS


def withdraw(group: Group, error: Exception, device: torch.device, positions: int) -> NoReturn:
    """Join the first collective with this rank's error flag raised, then raise ``error``.

    Called instead of the loss when local validation fails, so the peers see the flag and raise
    :class:`PeerError` rather than wait for this rank.
    """
    hdr = header(group, True, 0, positions, torch.zeros((), dtype=torch.int64, device=device))
    buffer = torch.cat([hdr, torch.zeros(positions, dtype=BUFFER_DTYPE, device=device)])
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=group.handle)
    raise error


def agree(
    reduced_header: torch.Tensor, group: Group, caller: str, check_own: Callable[[Layout], None] | None = None
) -> Layout:
    """Check the reduced header (identically on every rank) and return this rank's class layout.

    ``check_own(layout)`` validates what needs the global layout (class-index targets in ``[0, V)``);
    it runs before the agreement checks, so a rank with a bad target reports the target itself.
    """
    table = reduced_header.view(group.size, _FIELDS)
    widths = table[:, 1].long()
    positions = table[:, 2].long()
    digests = table[:, 3]
    layout = Layout(offset=widths[: group.rank].sum(), num_classes=widths.sum())
    if reads_on_host(table) and not torch.compiler.is_compiling():
        failed = [r for r, flag in enumerate(table[:, 0].tolist()) if flag]
        if failed:
            raise PeerError(
                f"{caller}: rank(s) {failed} of the process group rejected their input (their own traceback "
                "has the reason); every rank stops here so that none waits in a collective"
            )
        if check_own is not None:
            check_own(layout)
        if len(set(positions.tolist())) > 1:
            raise ValueError(
                f"{caller}: every rank must hold the same positions (the batch and spatial dimensions of input), "
                f"but the ranks hold {positions.tolist()}"
            )
        if len(set(digests.tolist())) > 1:
            raise ValueError(
                f"{caller}: the ranks were called with different targets or options (ignore_index, reduction, "
                "label_smoothing, target kind, weight, normalizer, dtypes); targets are global class ids and must be "
                "identical on every rank of the group"
            )
    elif not torch.compiler.is_compiling():
        if check_own is not None:
            check_own(layout)
        agreed = (table[:, 0] == 0).all() & (positions == positions[0]).all() & (digests == digests[0]).all()
        torch._assert_async(
            agreed,
            f"{caller}: ranks disagree (input rejected on a peer, different positions, or different targets/options)",
        )
    return layout
