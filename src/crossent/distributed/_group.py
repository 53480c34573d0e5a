"""The process group a loss communicates over, and failing together: a rank that cannot go on still
joins the collective its peers are in, then every rank raises at the same point instead of waiting
for a peer that left."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """A process group with this process's rank in it and its size."""

    handle: dist.ProcessGroup
    rank: int
    size: int

    def device_for(self, value: object) -> torch.device:
        """Where this rank's collectives run: ``value``'s device for a tensor, else the group's default.

        The default is CPU for gloo and the current CUDA device for NCCL, so that a rank whose argument
        is not even a tensor can still join the collective its peers are in.
        """
        if isinstance(value, torch.Tensor):
            return value.device
        return default_device(self.handle)


def default_device(process_group: dist.ProcessGroup) -> torch.device:
    """CPU for gloo, the current CUDA device for NCCL."""
    if dist.get_backend(process_group) == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve(process_group: object, caller: str) -> Group:
    """``process_group`` (a ``ProcessGroup`` such as ``dist.group.WORLD``) with this rank's place in it.

    Raised errors are the same on every rank (they depend only on the group), so no rank is left
    waiting in a collective.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"{caller}: torch.distributed is not initialized; call torch.distributed.init_process_group() "
            "(gloo on CPU, nccl on GPU) before passing a process_group"
        )
    if process_group is None or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"{caller}: process_group must be a torch.distributed.ProcessGroup (for example "
            f"torch.distributed.group.WORLD), not {type(process_group).__name__}"
        )
    rank = dist.get_rank(process_group)
    if rank < 0:
        raise ValueError(f"{caller}: this process (global rank {dist.get_rank()}) is not a member of process_group")
    return Group(process_group, rank, dist.get_world_size(process_group))


REJECTED = "rejected their input (their own traceback has the reason)"


class PeerError(RuntimeError):
    """Raised on every rank when another rank of the process group rejected its input.

    The rank with the bad input raises the specific error (and prints its traceback); the others
    raise this one at the same point, so that no rank waits in a collective for a peer that left.
    """


def reads_on_host(t: torch.Tensor) -> bool:
    """Whether checks read ``t`` on the host (CPU tensors: free) or become device-side asserts (no sync)."""
    return t.device.type == "cpu"


def peer_error(caller: str, failed: list[int], what: str) -> PeerError:
    return PeerError(
        f"{caller}: rank(s) {failed} of the process group {what}; every rank stops here so that none waits "
        "in a collective"
    )


def check_peers(flags: torch.Tensor, caller: str, what: str) -> None:
    """Raise :class:`PeerError` where any rank set its flag (``flags``: one per rank, after the collective).

    Read on the host for CPU tensors; a device-side assert on accelerators (no host sync).
    """
    if torch.compiler.is_compiling():
        return
    if reads_on_host(flags):
        failed = [r for r, flag in enumerate(flags.tolist()) if flag]
        if failed:
            raise peer_error(caller, failed, what)
    else:
        torch._assert_async((flags == 0).all(), f"{caller}: a rank of the process group {what}")


def sum_flagged(group: Group, payload: torch.Tensor, failed: bool, caller: str, what: str) -> torch.Tensor:
    """All-reduce SUM ``payload`` (its size the same on every rank) with one flag per rank, ``failed`` this
    rank's; the others raise :class:`PeerError` where it is set (a rank that failed raises its own error)."""
    buffer = torch.cat([payload.reshape(-1), payload.new_zeros(group.size)])
    buffer[payload.numel() + group.rank] = float(failed)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group.handle)
    if not failed:
        check_peers(buffer[payload.numel() :], caller, what)
    return buffer[: payload.numel()].view(payload.shape)
