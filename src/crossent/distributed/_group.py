"""The process group a loss communicates over, resolved once per call."""

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
