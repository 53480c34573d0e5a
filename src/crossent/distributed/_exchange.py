"""The first collective of every vocab-parallel loss: the global row maximum, plus the consensus header."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from crossent.distributed import _consensus
from crossent.distributed._group import Group


def global_row_max(
    local_max: torch.Tensor,
    classes: int,
    group: Group,
    digest: torch.Tensor,
    caller: str,
    check_own: Callable[[_consensus.Layout], None] | None = None,
) -> tuple[torch.Tensor, _consensus.Layout]:
    """``M[n, s] = max over all ranks of local_max[n, s]`` (in ``local_max``'s dtype), and the class layout.

    One all-reduce MAX of ``[header, local row maxima]`` in float64 (each maximum is a logit, exact
    in its own dtype too). ``local_max`` is ``-inf`` where this rank has no class. ``digest`` must
    cover the dtype of the second collective: ranks that disagree on it would send buffers of
    different sizes. ``check_own`` is passed to ``_consensus.agree``.
    """
    n, s = local_max.shape
    header = _consensus.header(group, False, classes, n * s, digest)
    buffer = torch.cat([header, local_max.reshape(-1).to(_consensus.BUFFER_DTYPE)])
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=group.handle)
    split = _consensus.header_size(group)
    layout = _consensus.agree(buffer[:split], group, caller, check_own)
    return buffer[split:].view(n, s).to(local_max.dtype), layout
