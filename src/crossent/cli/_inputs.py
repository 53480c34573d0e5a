"""Reading arrays the user hands the command line: JSON, .npy, .npz, .csv and .pt.

Loading is safe by construction: ``np.load(allow_pickle=False)`` and ``torch.load(weights_only=True)``,
so a file holding pickled Python objects is refused, never executed. Large .npy and .pt files are
memory-mapped and CSV is read a block of lines at a time, so ``eval`` can stream files bigger than
memory. Every problem is raised as a one-line ``CLIError`` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Iterator
from itertools import islice
from typing import Protocol

import numpy as np
import torch

from crossent.cli._errors import CLIError

SUFFIXES = (".npy", ".npz", ".csv", ".pt")


class ArraySource(Protocol):
    """Rows of one array, read in chunks; ``position`` of ``extent`` is how far reading has got."""

    name: str
    shape: tuple[int, ...] | None  # None where the row count is only known at the end (CSV)
    row_size: int  # values per row
    extent: int
    position: int

    def chunks(self, rows: int) -> Iterator[np.ndarray]: ...


class LoadedArray:
    """An array already in memory or memory-mapped (.npy, .npz, .pt): chunks are row slices."""

    def __init__(self, name: str, data: np.ndarray | torch.Tensor) -> None:
        self.name = name
        self.shape: tuple[int, ...] | None = tuple(data.shape)
        self.row_size = math.prod(data.shape[1:])
        self.extent = data.shape[0] if data.ndim else 1
        self.position = 0
        self._data = data

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        data = self._data if self._data.ndim else self._data.reshape(1)
        for start in range(0, self.extent, rows):
            self.position = min(start + rows, self.extent)
            yield _as_numpy(data[start : self.position])


class CsvRows:
    """A CSV of numbers, one sample per line, optionally with a header line; read in blocks of lines."""

    def __init__(self, path: str) -> None:
        self.name = path
        self.shape: tuple[int, ...] | None = None
        self.extent = os.path.getsize(path)
        self.position = 0
        self._path = path
        self.row_size = self._columns()

    def _columns(self) -> int:
        """Values on the first line of numbers (0 for a file without any)."""
        with open(self._path, "rb") as file:
            for line in islice(file, 2):
                row = _parse_row(line)
                if row is not None:
                    return len(row)
        return 0

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        columns: int | None = None
        line_number = 0
        with open(self._path, "rb") as file:
            first = file.readline()
            if _parse_row(first) is None and first.strip():  # a header line
                line_number = 1
                self.position = len(first)
            else:
                file.seek(0)
            while block := list(islice(file, rows)):
                self.position += sum(len(line) for line in block)
                if any(line.strip() for line in block):
                    values = self._parse_block(block, line_number, columns)
                    columns = values.shape[1]
                    yield values
                line_number += len(block)

    def _parse_block(self, block: list[bytes], lines_before: int, columns: int | None) -> np.ndarray:
        lines = [line.decode("utf-8", errors="replace") for line in block if line.strip()]
        try:
            values = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError:
            values = None
        if values is not None and columns in (None, values.shape[1]):
            return values
        # loadtxt reports rows within the block; find the offending line of the file instead
        for offset, line in enumerate(block, start=lines_before + 1):
            row = _parse_row(line)
            if row is None and line.strip():
                excerpt = _shorten(line.decode("utf-8", errors="replace").strip())
                raise CLIError(f"{self.name}: line {offset} is not a row of numbers: {excerpt}")
            if row is not None:
                if columns is not None and len(row) != columns:
                    raise CLIError(f"{self.name}: line {offset} has {len(row)} values, earlier lines {columns}")
                columns = len(row)
        raise CLIError(f"{self.name}: could not read lines {lines_before + 1}-{lines_before + len(block)}")


def _parse_row(line: bytes) -> list[float] | None:
    try:
        return [float(field) for field in line.decode("utf-8", errors="replace").split(",")]
    except ValueError:
        return None


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()  # NumPy has no bfloat16; float32 holds both exactly
        return values.numpy()
    return np.asarray(values)


def _split_member(spec: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE:NAME`` (one array of an .npz or of a saved dict)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, member = spec.rsplit(":", 1)
    return path, member or None


def _pick_member(name: str, members: list[str], member: str | None) -> str:
    """The name of the array to read: ``member``, or the only one there is."""
    if member is not None:
        if member not in members:
            raise CLIError(f"{name} has no array {member!r}; it holds {', '.join(members) or 'nothing'}")
        return member
    if len(members) != 1:
        raise CLIError(f"{name} holds {', '.join(members) or 'nothing'}; pick one array with {name}:NAME")
    return members[0]


def _refuse_pickle(name: str) -> CLIError:
    return CLIError(f"{name} holds pickled Python objects; only plain numeric arrays are loaded")


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "Python objects" in str(exc):
            raise _refuse_pickle(path) from None
        raise CLIError(f"{path} is not a readable .npy file ({exc})") from None


def _load_npz(path: str, member: str | None) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[_pick_member(path, archive.files, member)]
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise _refuse_pickle(path) from None
        raise CLIError(f"{path} is not a readable .npz file ({exc})") from None
    except OSError as exc:
        raise CLIError(f"{path} is not a readable .npz file ({exc})") from None


def _load_pt(path: str, member: str | None) -> torch.Tensor:
    try:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            content = torch.load(path, map_location="cpu", weights_only=True)  # legacy, non-zip format
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise _refuse_pickle(path) from None
        raise CLIError(f"{path} is not a readable .pt file") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise CLIError(f"{path} is not a readable .pt file ({str(exc).splitlines()[0]})") from None
    if isinstance(content, dict):
        named = {str(key): value for key, value in content.items()}
        content = named[_pick_member(path, list(named), member)]
    if not isinstance(content, torch.Tensor):
        raise CLIError(f"{path} holds a {type(content).__name__}, not a tensor")
    return content


def _check_numeric(name: str, data: np.ndarray | torch.Tensor) -> None:
    if isinstance(data, torch.Tensor):
        ok = not (data.is_complex() or data.dtype in (torch.quint8, torch.qint8, torch.qint32))
    else:
        ok = data.dtype.kind in "biuf"
    if not ok:
        raise CLIError(f"{name} holds {data.dtype} values; expected real numbers")


def open_array(spec: str) -> ArraySource:
    """The array at ``spec`` (``FILE`` or ``FILE:NAME``), ready to read in chunks."""
    path, member = _split_member(spec)
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, not a file")
    if suffix not in SUFFIXES:
        raise CLIError(f"{path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    if member is not None and suffix not in (".npz", ".pt"):
        raise CLIError(f"{spec}: only .npz and .pt files hold named arrays")
    if suffix == ".csv":
        return CsvRows(path)
    data: np.ndarray | torch.Tensor
    if suffix == ".npy":
        data = _load_npy(path)
    elif suffix == ".npz":
        data = _load_npz(path, member)
    else:
        data = _load_pt(path, member)
    _check_numeric(path, data)
    return LoadedArray(spec, data)


def read_all(spec: str) -> np.ndarray:
    """The whole array at ``spec`` in memory (for small inputs such as ``explain``'s)."""
    chunks = list(open_array(spec).chunks(1 << 20))
    if not chunks:
        raise CLIError(f"{spec} holds no values")
    return np.concatenate(chunks)


def json_or_file(text: str, option: str) -> np.ndarray:
    """``text`` as a JSON number or (nested) list, or the array in the file it names (.json too)."""
    if os.path.isfile(_split_member(text)[0]):
        if text.lower().endswith(".json"):
            with open(text, encoding="utf-8") as file:
                text = file.read()
        else:
            return read_all(text)
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise CLIError(f"{option}: {_shorten(text)} is neither JSON nor an existing file") from None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise CLIError(f"{option}: {_shorten(text)} is not a rectangular array of numbers") from None
    return array


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")
