"""What the user hands the command line: arrays to read (JSON, .npy, .npz, .csv, .pt), files to write
and devices to run on.

Loading is safe by construction: ``np.load(allow_pickle=False)`` and ``torch.load(weights_only=True)``,
so a file holding pickled Python objects is refused, never executed. Large .npy and .pt files are
memory-mapped and CSV is read a block of lines at a time, so ``eval`` can stream files bigger than
memory. Every problem is raised as a one-line ``CLIError`` naming the file, and the loaders' warnings
are silenced so that line stays the only one.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from itertools import islice
from typing import Protocol

import numpy as np
import torch

from crossent.cli._errors import CLIError

SUFFIXES = (".npy", ".npz", ".csv", ".pt")
MAX_LISTED = 8  # array names listed when a file holds several and none was picked
# Tensor types NumPy holds (bfloat16 is read as float32); float8, complex and quantized values are refused
READABLE_DTYPES = {
    torch.bool,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
}


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
    """A CSV of numbers, one sample per line; read in blocks of lines.

    Blank lines are skipped anywhere, and so is one header line before the first row of numbers (as
    spreadsheets and ``np.savetxt(header=...)`` write it, possibly after a UTF-8 byte order mark).
    """

    def __init__(self, path: str) -> None:
        self.name = path
        self.shape: tuple[int, ...] | None = None
        self.extent = os.path.getsize(path)
        self.position = 0
        self._path = path
        self._start, self._lines_before, self.row_size = self._first_row()

    def _first_row(self) -> tuple[int, int, int]:
        """Where the first row of numbers starts (byte offset, lines before it) and its number of values.

        (offset of the end, 0, 0) for a file without any numbers.
        """
        offset = 0
        header = False
        with open(self._path, "rb") as file:
            for number, line in enumerate(file, start=1):
                row = _parse_row(line)
                if row is not None:
                    return offset, number - 1, len(row)
                if line.strip():
                    if header:
                        raise self._not_numbers(number, line)
                    header = True
                offset += len(line)
        return offset, 0, 0

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        columns: int | None = None
        line_number = self._lines_before
        with open(self._path, "rb") as file:
            file.seek(self._start)
            self.position = self._start
            while block := list(islice(file, rows)):
                self.position += sum(len(line) for line in block)
                if any(line.strip() for line in block):
                    values = self._parse_block(block, line_number, columns)
                    columns = values.shape[1]
                    yield values
                line_number += len(block)

    def _parse_block(self, block: list[bytes], lines_before: int, columns: int | None) -> np.ndarray:
        lines = [_decode(line) for line in block if line.strip()]
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
                raise self._not_numbers(offset, line)
            if row is not None:
                if columns is not None and len(row) != columns:
                    raise CLIError(f"{self.name}: line {offset} has {len(row)} values, earlier lines {columns}")
                columns = len(row)
        raise CLIError(f"{self.name}: could not read lines {lines_before + 1}-{lines_before + len(block)}")

    def _not_numbers(self, line_number: int, line: bytes) -> CLIError:
        return CLIError(f"{self.name}: line {line_number} is not a row of numbers: {_shorten(_decode(line).strip())}")


def _decode(line: bytes) -> str:
    """A line of a CSV file as text; "-sig" drops the byte order mark some spreadsheets write first."""
    return line.decode("utf-8-sig", errors="replace")


def _parse_row(line: bytes) -> list[float] | None:
    try:
        return [float(field) for field in _decode(line).split(",")]
    except ValueError:
        return None


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()  # NumPy has no bfloat16; float32 holds both exactly
        return values.numpy()
    return np.asarray(values)


def _reason(exc: BaseException) -> str:
    """The gist of a loader's error: its first sentence (torch's messages go on for lines)."""
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return first.split(". ")[0].rstrip(".")


def _split_member(spec: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE:NAME`` (one array of an .npz or of a saved dict)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, member = spec.rsplit(":", 1)
    return path, member or None


def _pick_member(name: str, members: list[str], member: str | None) -> str:
    """The name of the array to read: ``member``, or the only one there is."""
    if not members:
        raise CLIError(f"{name} holds no arrays")
    listed = ", ".join(members[:MAX_LISTED]) + (f", ... ({len(members)} in all)" if len(members) > MAX_LISTED else "")
    if member is not None:
        if member not in members:
            raise CLIError(f"{name} has no array {member!r}; it holds {listed}")
        return member
    if len(members) != 1:
        raise CLIError(f"{name} holds {listed}; pick one array with {name}:NAME")
    return members[0]


def _refuse_pickle(name: str) -> CLIError:
    return CLIError(f"{name} holds pickled Python objects; only plain numeric arrays are loaded")


def _refuse_nested(name: str) -> CLIError:
    return CLIError(f"{name} holds a nested tensor; save a regular (N, C) tensor")


def _load_numpy(path: str, member: str | None) -> np.ndarray:
    """An .npy (memory-mapped) or one array of an .npz; NumPy tells them apart by content, not by suffix."""
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            return loaded[_pick_member(path, loaded.files, member)]
    except ValueError as exc:
        if "Object arrays" in str(exc) or "Python objects" in str(exc):
            raise _refuse_pickle(path) from None
        detail = _reason(exc)
        if "pickled" in str(exc):  # neither .npy nor .npz inside: a pickle if it starts like one
            with open(path, "rb") as file:
                if file.read(1) == pickle.PROTO:
                    raise _refuse_pickle(path) from None
            detail = "not written by NumPy, or damaged"
        raise CLIError(f"{path} is not a readable {_suffix(path)} file ({detail})") from None
    except (EOFError, zipfile.BadZipFile, zlib.error) as exc:  # truncated or corrupt
        raise CLIError(f"{path} is not a readable {_suffix(path)} file ({_reason(exc)})") from None


def _load_pt(path: str, member: str | None) -> torch.Tensor:
    try:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            content = torch.load(path, map_location="cpu", weights_only=True)  # legacy, non-zip format
    except OSError:
        raise  # the file could not be read at all: open_array says so
    except Exception as exc:  # a damaged file can make the unpickler fail in any way
        if "Unsupported global" in str(exc):
            raise _refuse_pickle(path) from None
        if "nested jagged" in str(exc):  # loading one would need torch._dynamo; it is refused anyway
            raise _refuse_nested(path) from None
        if "TorchScript" in str(exc):
            raise CLIError(f"{path} is a TorchScript module, not saved tensors") from None
        # torch's own errors say what is damaged; the unpickler's (a KeyError, say) mean nothing to a user
        detail = _reason(exc) if isinstance(exc, RuntimeError) else "not written by torch.save, or damaged"
        raise CLIError(f"{path} is not a readable .pt file ({detail})") from None
    if isinstance(content, torch.Tensor):
        if member is not None:
            raise CLIError(f"{path} holds a single tensor; drop :{member}")
        tensor = content
    else:
        named = _tensors(content)
        tensor = named[_pick_member(path, list(named), member)]
    # outputs saved without .detach(), and nn.Parameters, carry autograd state that reading does not need
    return tensor.detach()


def _tensors(content: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors in dicts, lists and tuples, named by their keys and indices joined with '.'."""
    if isinstance(content, torch.Tensor):
        return {prefix: content}
    if isinstance(content, dict):
        items = [(str(key), value) for key, value in content.items()]
    elif isinstance(content, (list, tuple)):
        items = [(str(index), value) for index, value in enumerate(content)]
    else:  # a number, a string, None: not an array
        return {}
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found.update(_tensors(value, f"{prefix}.{key}" if prefix else key))
    return found


def _check_values(name: str, data: np.ndarray | torch.Tensor) -> None:
    """Refuse arrays without plain real numbers to read: sparse, nested and meta tensors, and other dtypes."""
    if isinstance(data, torch.Tensor):
        if data.is_nested:
            raise _refuse_nested(name)
        if data.layout != torch.strided:
            raise CLIError(f"{name} holds a sparse tensor ({data.layout}); save it with .to_dense()")
        if data.is_meta:
            raise CLIError(f"{name} holds a tensor on the meta device, which has a shape but no values")
        readable = data.dtype in READABLE_DTYPES
    else:
        readable = data.dtype.kind in "biuf"
    if not readable:
        raise CLIError(f"{name} holds {data.dtype} values; expected real numbers: save them as float32 or float64")


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def open_array(spec: str) -> ArraySource:
    """The array at ``spec`` (``FILE`` or ``FILE:NAME``), ready to read in chunks."""
    path, member = _split_member(spec)
    suffix = _suffix(path)
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, not a file")
    if suffix not in SUFFIXES:
        raise CLIError(f"{path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    if member is not None and suffix not in (".npz", ".pt"):
        raise CLIError(f"{spec}: only .npz and .pt files hold named arrays")
    if os.path.getsize(path) == 0:
        raise CLIError(f"{path} is empty")
    data: np.ndarray | torch.Tensor
    try:
        # torch.load warns about TorchScript archives, sparse tensors and more: the error line, if any, says it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if suffix == ".csv":
                return CsvRows(path)
            data = _load_pt(path, member) if suffix == ".pt" else _load_numpy(path, member)
    except OSError as exc:
        raise CLIError(f"{path}: cannot read it ({exc.strerror or _reason(exc)})") from None
    _check_values(spec, data)
    return LoadedArray(spec, data)


def read_all(spec: str) -> np.ndarray:
    """The whole array at ``spec`` in memory (for small inputs such as ``explain``'s)."""
    chunks = list(open_array(spec).chunks(1 << 20))
    if not chunks:
        raise CLIError(f"{spec} holds no values")
    return np.concatenate(chunks)


def json_or_file(text: str, option: str) -> np.ndarray:
    """``text`` as a JSON number or (nested) list, or the array in the file it names (.json too)."""
    path = _split_member(text)[0]
    if not os.path.isfile(path):
        return _json_array(text, option, f"{_shorten(text)} is neither JSON nor an existing file")
    if not path.lower().endswith(".json"):
        try:
            return read_all(text)
        except CLIError as error:
            raise CLIError(f"{option}: {error}") from None
    try:
        with open(path, encoding="utf-8-sig") as file:
            content = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"{option}: {path}: cannot read it ({_reason(exc)})") from None
    return _json_array(content, option, f"{path} is {'not JSON' if content.strip() else 'empty'}")


def _json_array(text: str, option: str, not_json: str) -> np.ndarray:
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise CLIError(f"{option}: {not_json}") from None
    try:
        return np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise CLIError(f"{option}: {_shorten(text)} is not a rectangular array of numbers") from None


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def output_file(path: str, option: str, suffix: str | None = None) -> None:
    """Refuse, before any work is done, a file ``option`` could not write; folders are never created."""
    if suffix is not None and not path.lower().endswith(suffix):
        raise CLIError(f"{option} writes a {suffix[1:].upper()}; give a file name ending in {suffix}, not {path!r}")
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise CLIError(f"cannot write {path}: it is a folder")
    if not os.path.isdir(folder):
        raise CLIError(f"cannot write {path}: no such folder {folder}")


def torch_device(requested: str | None) -> torch.device:
    """The ``--device`` asked for, checked to work here; by default cuda where available, else cpu."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(requested)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise CLIError(
                f"--device {requested}: torch {torch.__version__} finds no CUDA device here; use --device cpu"
            )
        torch.empty(0, device=chosen)
    except (RuntimeError, AssertionError) as exc:  # unknown or unusable device (builds without a backend assert)
        raise CLIError(f"--device {requested}: {_reason(exc)}") from None
    return chosen
