"""``.npy`` files written a block at a time and read by memory map.

A stage that makes one row per frame (the frames index, the duplicate sources) does not know the
row count until its input ends, and must not hold the rows meanwhile. :class:`NpyAppender`
reserves a header wide enough for any count, appends rows as they come, and rewrites the header
with the real count at the end: the file is a plain ``.npy`` that ``numpy.load`` reads.
:class:`NpyReader` reads a range of rows, or one column in blocks, so a job holds only what it
asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

_MAGIC = b"\x93NUMPY\x01\x00"
_WIDEST_SHAPE = (10**18,)  # any row count fits in the reserved header


def _header(dtype: np.dtype, shape: tuple[int, ...], size: int | None = None) -> bytes:
    """A version 1.0 header for ``dtype`` and ``shape``, padded to ``size`` bytes (or to the
    next multiple of 64)."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    body = len(_MAGIC) + 2 + len(text) + 1
    size = size if size is not None else -(-body // 64) * 64
    if body > size:
        raise ValueError(f"npy header of {body} bytes does not fit in {size}")
    padded = (text + " " * (size - body) + "\n").encode("latin1")
    return _MAGIC + (len(padded)).to_bytes(2, "little") + padded


class NpyAppender:
    """Append rows of one dtype to a ``.npy`` file opened for writing (``handle``)."""

    def __init__(self, handle: BinaryIO, dtype: np.dtype) -> None:
        self.handle, self.dtype = handle, np.dtype(dtype)
        self.rows = 0
        self._reserved = len(_header(self.dtype, _WIDEST_SHAPE))
        handle.write(_header(self.dtype, (0,), self._reserved))

    def append(self, rows: np.ndarray) -> None:
        """Write ``rows`` (converted to the file's dtype) after those already written."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self.handle.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> None:
        """Write the final row count into the header (the handle stays open)."""
        self.handle.flush()
        end = self.handle.tell()
        self.handle.seek(0)
        self.handle.write(_header(self.dtype, (self.rows,), self._reserved))
        self.handle.seek(end)


def write_npy(handle: BinaryIO, rows: np.ndarray) -> None:
    """Write ``rows`` whole as a ``.npy`` file to ``handle`` (same layout as the appender)."""
    out = NpyAppender(handle, rows.dtype)
    out.append(rows)
    out.close()


class NpyReader:
    """Rows of a ``.npy`` file (1-D, any dtype) read with plain file reads.

    Reads, not a memory map: pages of a mapped file count in a job's resident memory for as
    long as the map lives, which would make a column scan over the whole sample look like (and,
    under a memory limit, act like) holding the whole file.
    """

    def __init__(self, path: str | os.PathLike, dtype: np.dtype | None = None) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, file_dtype = read_header(handle)
            self.data_offset = handle.tell()
        if len(shape) != 1 or fortran:
            raise ValueError(f"{path}: expected a 1-d array, found shape {shape}")
        if dtype is not None and file_dtype != np.dtype(dtype):
            raise ValueError(f"{path}: holds {file_dtype}, expected {np.dtype(dtype)}")
        self.dtype, self.rows = file_dtype, int(shape[0])

    def __len__(self) -> int:
        return self.rows

    def read(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows ``lo .. hi-1`` (a fresh array)."""
        hi = self.rows if hi is None else min(hi, self.rows)
        if hi <= lo:
            return np.empty(0, self.dtype)
        offset = self.data_offset + lo * self.dtype.itemsize
        out = np.fromfile(self.path, dtype=self.dtype, count=hi - lo, offset=offset)
        if out.size != hi - lo:
            raise ValueError(f"{self.path}: truncated (rows {lo}..{hi - 1} not all there)")
        return out

    def column(self, name: str, lo: int = 0, hi: int | None = None, block: int = 1 << 20):
        """One field of rows ``lo .. hi-1``, read ``block`` rows at a time (compact result)."""
        hi = self.rows if hi is None else min(hi, self.rows)
        out = np.empty(max(0, hi - lo), self.dtype[name])
        for start in range(lo, hi, block):
            stop = min(hi, start + block)
            out[start - lo : stop - lo] = self.read(start, stop)[name]
        return out
