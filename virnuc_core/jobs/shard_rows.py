"""Reading a finished shard's rows (:class:`ShardRows`): the folder an embed job's
:class:`virnuc_core.jobs.store.ShardCheckpoint` renamed to its declared output, its blocks'
checksums checked as they are read, rows gathered by record position for finalize."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from virnuc_core.jobs.store import (
    BLOCKS_NAME,
    META_NAME,
    READ_BYTES,
    ROWS_NAME,
    WORK_FORMAT,
    CorruptRows,
    _check_rows,
    _iter_blocks,
    _read_blocks,
    _read_state,
    _Stale,
    row_dtype,
)


def _runs(sorted_pos: np.ndarray, span: int, gap: int = 16) -> Iterator[np.ndarray]:
    """Index runs of ``sorted_pos`` worth one read each: split where the positions are more than
    ``gap`` rows apart, and so that no read spans more than ``span`` rows."""
    bounds = [0, *(np.flatnonzero(np.diff(sorted_pos) > gap) + 1).tolist(), sorted_pos.size]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        while a < b:
            stop = int(np.searchsorted(sorted_pos[a:b], sorted_pos[a] + span, side="left")) + a
            stop = max(stop, a + 1)
            yield np.arange(a, stop)
            a = stop


class ShardRows:
    """A completed rows directory (the output of an embed job), read back safely.

    :meth:`positions` checks every block's checksum and record numbers first, so no row of a
    changed or damaged file is ever used; :meth:`gather` then reads rows by position.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.state = _read_state(self.path)
            self.meta = json.loads((self.path / META_NAME).read_text())
        except (_Stale, OSError, ValueError) as exc:
            raise CorruptRows(f"{self.path}: not a complete rows directory ({exc})") from None
        if self.state["format"] != WORK_FORMAT:
            raise CorruptRows(f"{self.path}: format {self.state['format']!r}, not {WORK_FORMAT}")
        self.dim, self.lo, self.hi = (int(self.state[k]) for k in ("dim", "lo", "hi"))
        self.dtype = row_dtype(self.dim)

    def positions(self) -> np.ndarray:
        """Row position in ``rows.bin`` of each record ``lo .. hi-1`` (-1: no row), after
        checking every block; raises :class:`CorruptRows` naming the file and the block."""
        out = np.full(self.hi - self.lo, -1, np.int64)
        fd = os.open(self.path / ROWS_NAME, os.O_RDONLY)
        try:
            with open(self.path / BLOCKS_NAME, "rb") as handle:
                blocks = _read_blocks(handle.fileno(), self.state["blocks"], self.state["rows"])
            _check_rows(fd, self.dtype, blocks, self.lo, self.hi)
            row = 0
            for _, data in _iter_blocks(fd, self.dtype, blocks):
                records = np.frombuffer(data, self.dtype)["record"]
                out[records - self.lo] = np.arange(row, row + records.size)
                row += records.size
        except _Stale as exc:
            raise CorruptRows(f"{self.path / ROWS_NAME}: {exc}; delete {self.path} and rerun "
                              "(the embed job recomputes it)") from None  # fmt: skip
        finally:
            os.close(fd)
        return out

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Embeddings (k, dim) float32 of the rows at ``positions``, in the given order."""
        positions = np.asarray(positions, np.int64)
        out = np.empty((positions.size, self.dim), np.float32)
        if positions.size == 0:
            return out
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        fd = os.open(self.path / ROWS_NAME, os.O_RDONLY)
        try:
            for run in _runs(sorted_pos, max(1, READ_BYTES // self.dtype.itemsize)):
                first, last = int(sorted_pos[run[0]]), int(sorted_pos[run[-1]])
                size = (last - first + 1) * self.dtype.itemsize
                data = os.pread(fd, size, first * self.dtype.itemsize)
                if len(data) != size:
                    raise CorruptRows(f"{self.path / ROWS_NAME}: shorter than its progress says")
                rows = np.frombuffer(data, self.dtype)
                out[order[run]] = rows["embedding"][sorted_pos[run] - first]
        finally:
            os.close(fd)
        return out
