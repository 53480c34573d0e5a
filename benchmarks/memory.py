"""Peak extra memory of one call: RSS growth on CPU, the caching allocator's peak on CUDA.

"Extra" is what the call adds on top of what was already there: its inputs, and whatever one
warm-up call left behind. The call's results (output, gradients) count, since it allocates them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

_M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's <malloc.h>


def use_fixed_mmap_threshold(threshold_bytes: int = 128 * 1024) -> None:
    """Make RSS follow the live tensors: every allocation above ``threshold_bytes`` gets its own mapping.

    glibc serves an allocation above its mmap threshold with a mapping of its own, returned to the
    kernel on free, but it raises that threshold (up to 32 MiB) each time such a block is freed.
    Below the threshold, freed blocks stay resident in the heap and the next call reuses them
    without growing the RSS, so that call's temporaries would go unseen. Setting the threshold
    turns the adjustment off. Other C libraries have no ``mallopt``; they are left as they are.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, threshold_bytes)


def peak_rss_growth(call: Callable[[], object]) -> int:
    """Bytes by which this process's resident set peaked during ``call`` above its size just before.

    Writing "5" to /proc/self/clear_refs resets the kernel's high-water mark of the resident set
    (VmHWM in /proc/self/status) to the current RSS (Linux 4.0 and later). VmHWM read after the call
    is then the exact peak during it, with no sampling thread that could miss a short-lived peak.
    ``getrusage``'s ru_maxrss cannot be reset: it would report the largest peak of the whole process,
    building the inputs and the warm-up included.
    """
    baseline = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    result = call()
    peak = _status_bytes("VmHWM")
    del result  # the result is part of the peak: held until VmHWM is read
    return peak - baseline


def cuda_peak_growth(call: Callable[[], object], device: torch.device) -> int:
    """Bytes by which the CUDA caching allocator's allocated memory peaked during ``call``."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    result = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return peak - baseline


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field} line")
