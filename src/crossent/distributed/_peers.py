"""Failing together: a rank that cannot go on still joins the collective its peers are in, and then
every rank raises at the same point instead of waiting for a peer that left."""

from __future__ import annotations

import torch

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
