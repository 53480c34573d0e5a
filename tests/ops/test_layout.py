"""Block sizes come from the cache the CPU reports."""

from __future__ import annotations

from pathlib import Path

import torch

from crossent.ops import _layout


def _cache(root: Path, index: int, level: int, kind: str, size: str, cpus: str) -> None:
    d = root / f"index{index}"
    d.mkdir(parents=True)
    for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", cpus)):
        (d / name).write_text(f"{value}\n")


def test_cache_per_core_is_the_larger_of_l2_and_the_l3_share(tmp_path: Path) -> None:
    _cache(tmp_path, 0, 1, "Data", "48K", "0")
    _cache(tmp_path, 1, 1, "Instruction", "32K", "0")
    _cache(tmp_path, 2, 2, "Unified", "2048K", "0")
    _cache(tmp_path, 3, 3, "Unified", "105M", "0-55")  # a 56-core Xeon: 1.9 MiB of L3 per core
    assert _layout.cache_bytes_per_core(tmp_path) == 2 << 20
    _cache(tmp_path, 4, 3, "Unified", "32768K", "0-1,4-5")  # 8 MiB per core of four
    assert _layout.cache_bytes_per_core(tmp_path) == 8 << 20


def test_unreadable_cache_information_falls_back(tmp_path: Path) -> None:
    assert _layout.cache_bytes_per_core(tmp_path / "missing") == _layout._DEFAULT_CACHE_BYTES
    _cache(tmp_path, 0, 2, "Unified", "garbage", "0")
    assert _layout.cache_bytes_per_core(tmp_path) == _layout._DEFAULT_CACHE_BYTES


def test_blocks_cover_every_position_once() -> None:
    for n, c, s, size in [(5, 7, 3, 7), (1, 100, 9, 64), (4, 3, 1, 1 << 20), (3, 0, 2, 7)]:
        _layout.BLOCK_ELEMENTS = size
        try:
            seen = torch.zeros(n, s, dtype=torch.int64)
            for rows, cols in _layout.blocks(n, c, s, torch.device("cpu")):
                seen[rows, cols] += 1
            assert bool((seen == 1).all()), (n, c, s, size)
        finally:
            _layout.BLOCK_ELEMENTS = None
