"""Shared data and comparisons for the multi-rank checks: every rank builds the same global tensors
from fixed seeds, cuts its own class shard, and compares with torch on the full tensors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from crossent.ops import _layout

# shard widths of a 7-class vocabulary: even-ish, lopsided, with an empty shard
LAYOUTS = {
    1: [[7]],
    2: [[4, 3], [1, 6], [7, 0]],
    3: [[3, 2, 2], [0, 5, 2], [2, 0, 5]],
}


def rank() -> int:
    return dist.get_rank()


def world() -> int:
    return dist.get_world_size()


def shard_range(widths: list[int]) -> tuple[int, int]:
    start = sum(widths[: rank()])
    return start, start + widths[rank()]


def shard(t: torch.Tensor, widths: list[int], dim: int) -> torch.Tensor:
    start, stop = shard_range(widths)
    return t.narrow(dim, start, stop - start)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Case:
    """One cross-entropy call: a shape, a target kind and the loss options."""

    shape: tuple[int, ...]  # full logits shape, class dim 1 (0 for 1-dim)
    probability: bool
    weighted: bool
    label_smoothing: float
    reduction: str
    ignore_index: int
    seed: int

    @property
    def class_dim(self) -> int:
        return 0 if len(self.shape) == 1 else 1

    @property
    def classes(self) -> int:
        return self.shape[self.class_dim]

    def tensors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Full logits, target and class weight, identical on every rank."""
        g = generator(self.seed)
        x = (torch.randn(self.shape, generator=g, dtype=torch.float64) * 3).to(dtype)
        w = (torch.rand(self.classes, generator=g, dtype=torch.float64) + 0.25).to(dtype) if self.weighted else None
        if self.probability:
            t = torch.randn(self.shape, generator=g, dtype=torch.float64).softmax(self.class_dim).to(dtype)
            return x, t, w
        positions = self.shape[:1] + self.shape[2:] if len(self.shape) > 1 else ()
        t = torch.randint(0, self.classes, positions, generator=g)
        flat = t.reshape(-1)
        if flat.numel() > 2:
            flat[0], flat[1] = 0, self.classes - 1  # the first and last class ids
        if flat.numel() > 3:
            flat[2] = self.ignore_index
        return x, t, w


def case_grid(shapes: list[tuple[int, ...]]) -> Iterator[Case]:
    seed = 0
    for shape in shapes:
        for probability in (False, True):
            for weighted in (False, True):
                for eps in (0.0, 0.3):
                    for reduction in ("none", "sum", "mean"):
                        seed += 1
                        # ignore_index 2 is a real class id: it must be ignored, not owned by a rank
                        ignore = -100 if probability or seed % 2 else 2
                        yield Case(shape, probability, weighted, eps, reduction, ignore, seed)


@contextlib.contextmanager
def tiny_blocks(enabled: bool) -> Iterator[None]:
    """Walk the logits in blocks of a few values, so the block loops and ragged edges run."""
    saved = _layout.BLOCK_ELEMENTS
    if enabled:
        _layout.BLOCK_ELEMENTS = 7
    try:
        yield
    finally:
        _layout.BLOCK_ELEMENTS = saved


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    """Elementwise ``|a - e| <= rtol |e|`` plus a floor of ``rtol`` times the tensor's largest value,
    so entries that cancel to ~0 are judged on the tensor's scale; NaN must match NaN."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a, e = actual.detach().double(), expected.detach().double()
    finite = e[torch.isfinite(e)]
    floor = rtol * float(finite.abs().max()) if finite.numel() else 0.0
    torch.testing.assert_close(a, e, rtol=rtol, atol=max(floor, 1e-300), equal_nan=True, msg=lambda m: f"{what}: {m}")


def assert_same_on_every_rank(t: torch.Tensor, what: str) -> None:
    """The tensor is bitwise identical on all ranks (e.g. the loss, which every rank returns)."""
    gathered = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(gathered, t.contiguous())
    for r, other in enumerate(gathered):
        same = (
            torch.equal(other, t)
            or (torch.isnan(other) == torch.isnan(t)).all()
            and torch.equal(other.nan_to_num(), t.nan_to_num())
        )
        assert same, f"{what}: rank {rank()} has {t}, rank {r} has {other}"
