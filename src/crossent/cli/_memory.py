"""Peak memory of a piece of tensor code, on any device, CPU included.

torch keeps allocator statistics only for accelerators, so this counts storages instead: a dispatch
mode sees every tensor an operator returns (forward and backward alike), adds the bytes of each new
storage, and subtracts them once the storage has been freed. The peak of that running total is the
memory the code needed beyond its inputs. It counts tensor storage, not allocator caching or
fragmentation, so it compares two implementations fairly on any device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _address(tensor: torch.Tensor) -> int:
    return StorageWeakRef(tensor.untyped_storage()).cdata


class _StorageTracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}  # storage address -> (weak ref, bytes)
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # forget storages freed since the last op first, so a new storage at a reused address counts
        for key in [key for key, (ref, _) in self._live.items() if ref.expired()]:
            self.current -= self._live.pop(key)[1]
        # an output on an input's storage (a view, an in-place result) allocated nothing
        inputs = {_address(value) for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)}
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":  # meta tensors hold no memory
                storage = value.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self._live and ref.cdata not in inputs:
                    self._live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_bytes(fn: Callable[[], object]) -> int:
    """Bytes of tensor storage ``fn`` had allocated at its peak, counting what it creates (not its inputs)."""
    with _StorageTracker() as tracker:
        fn()
    return tracker.peak
