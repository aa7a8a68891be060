"""Embeddings of one (model, shard) job: a crash-safe checkpoint, then one finished HDF5 file.

Durability design
-----------------
The work state is *not* an HDF5 file. HDF5 is not crash-safe: a process killed while the library
flushes metadata can leave a file that no longer opens, and a file opened with
``libver='latest'`` that was not closed cleanly refuses to open at all ("file is already open for
write ... use h5clear") -- every ``kill -9`` would then throw away all committed rows. Instead the
work path is a small directory kept outside Snakemake's declared outputs::

    <work_path>/rows.bin       committed rows, appended in commit order, fixed-size records:
                               int64 record number + float32[dim] embedding, little-endian
    <work_path>/progress.json  {"format", "fingerprint", "dim", "committed"}

:meth:`ShardCheckpoint.commit` appends the buffered rows to ``rows.bin`` and ``fsync``\\ s it; only
then does it write ``progress.json`` to a temporary file, ``fsync`` it and ``rename`` it over the
old one (then ``fsync`` the directory). ``rename`` is atomic, so at any instant ``progress.json``
names a count of rows that are complete on disk. Rows past ``committed`` (a commit killed half way)
are ignored and truncated away on resume. This survives SIGKILL at any instant and, thanks to the
``fsync`` calls, a power loss too.

A work directory written with other settings (fingerprint or dim differ), or one that fails the
checks on open (no/unparsable progress file, ``rows.bin`` shorter than the committed rows,
duplicated record numbers), is renamed to ``<name>.stale-<timestamp>`` with a WARNING on the
``virnuc.store`` logger, and the job starts fresh. Only one process may write a work directory at
a time; a second one gets a :class:`RuntimeError` (``flock`` on ``rows.bin``).

:meth:`ShardCheckpoint.finalize` writes the declared output (HDF5, rows in record order) beside its
final name, renames it into place, and only then deletes the work directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from virnuc_core.dedupe import expand_copies
from virnuc_core.files import atomic_path

log = logging.getLogger("virnuc.store")

WORK_FORMAT = "virnuc-shard-work/1"
ROWS_NAME = "rows.bin"
PROGRESS_NAME = "progress.json"


def row_dtype(dim: int) -> np.dtype:
    """The on-disk record of ``rows.bin``: record number then the embedding."""
    return np.dtype([("record", "<i8"), ("embedding", "<f4", (dim,))])


class _Stale(Exception):
    """The work directory cannot be resumed; the message says why."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_progress(work: Path, progress: Mapping[str, Any]) -> None:
    """Replace ``progress.json`` atomically and durably."""
    tmp = work / f".{PROGRESS_NAME}.tmp"
    data = json.dumps(dict(progress), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, work / PROGRESS_NAME)
    _fsync_dir(work)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (whatever a failed earlier attempt left there)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def check_attr(key: str, value: Any) -> None:
    """Raise TypeError unless ``value`` can be an HDF5 attribute of ours (str/int/float/bool)."""
    if not isinstance(key, str) or not isinstance(value, str | int | float | bool | np.generic):
        raise TypeError(
            f"HDF5 attribute {key!r} must be str/int/float/bool, got {type(value).__name__}"
        )


def _set_aside(path: Path, reason: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.stale-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.stale-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    log.warning("set aside work state %s -> %s (%s); starting fresh", path, target.name, reason)
    return target


class ShardCheckpoint:
    """Resumable, crash-safe store for the embeddings of one (model, shard) job.

    Use :meth:`open`, never the constructor. Typical loop::

        with ShardCheckpoint.open(work, settings.fingerprint(), dim,
                                  every_records=2000, every_seconds=60) as ckpt:
            todo = np.setdiff1d(all_records, ckpt.committed_records())
            for records, emb in batches(todo):
                ckpt.append(records, emb)
                if ckpt.should_commit():
                    ckpt.commit()
            ckpt.finalize(out_path, settings.attrs(), ids=ids)

    ``close()`` (and leaving the ``with`` block) does *not* commit buffered rows: call
    :meth:`commit` yourself if the rows computed so far should be kept.
    """

    def __init__(
        self,
        work_path: Path,
        fingerprint: str,
        dim: int,
        fd: int,
        committed: np.ndarray,
        every_records: int,
        every_seconds: float,
    ) -> None:
        self.work_path = work_path
        self.fingerprint = fingerprint
        self.dim = dim
        self._dtype = row_dtype(dim)
        self._fd: int | None = fd
        self._committed = committed  # records in commit order
        self._committed_sorted = np.sort(committed)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.every_records = int(every_records)
        self.every_seconds = float(every_seconds)
        self._last_commit = time.monotonic()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        work_path: str | os.PathLike,
        fingerprint: str,
        dim: int,
        every_records: int = 2000,
        every_seconds: float = 60.0,
    ) -> ShardCheckpoint:
        """Resume the work directory at ``work_path`` if it has these settings, else start fresh."""
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        work = Path(work_path)
        if work.exists() or work.is_symlink():
            try:
                return cls._resume(work, fingerprint, dim, every_records, every_seconds)
            except _Stale as exc:
                _set_aside(work, str(exc))
        return cls._fresh(work, fingerprint, dim, every_records, every_seconds)

    @classmethod
    def _fresh(cls, work: Path, fingerprint: str, dim: int, every_records, every_seconds):
        work.parent.mkdir(parents=True, exist_ok=True)
        # Build the directory under a temporary name, then rename: a work directory either has a
        # valid progress file or does not exist.
        for old in work.parent.glob(
            glob.escape(f".{work.name}.new-") + "*"
        ):  # left by a killed process
            shutil.rmtree(old, ignore_errors=True)
        tmp = work.with_name(f".{work.name}.new-{os.getpid()}")
        tmp.mkdir()
        (tmp / ROWS_NAME).touch()
        _write_progress(
            tmp, {"format": WORK_FORMAT, "fingerprint": fingerprint, "dim": dim, "committed": 0}
        )
        os.replace(tmp, work)
        _fsync_dir(work.parent)
        fd = cls._lock_rows(work)
        return cls(work, fingerprint, dim, fd, np.empty(0, np.int64), every_records, every_seconds)

    @staticmethod
    def _lock_rows(work: Path) -> int:
        fd = os.open(work / ROWS_NAME, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{work} is being written by another process") from None
        return fd

    @classmethod
    def _resume(cls, work: Path, fingerprint: str, dim: int, every_records, every_seconds):
        if not work.is_dir():
            raise _Stale("not a work directory (left by another version or tool?)")
        try:
            progress = json.loads((work / PROGRESS_NAME).read_text())
            fmt, fp = progress["format"], progress["fingerprint"]
            old_dim, committed = int(progress["dim"]), int(progress["committed"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Stale(f"unreadable progress file: {exc!r}") from None
        if fmt != WORK_FORMAT:
            raise _Stale(f"work format {fmt!r}, expected {WORK_FORMAT!r}")
        if fp != fingerprint:
            raise _Stale(f"settings differ: work has {fp!r}, job has {fingerprint!r}")
        if old_dim != dim:
            raise _Stale(f"embedding dim differs: work has {old_dim}, job has {dim}")
        if committed < 0:
            raise _Stale(f"negative committed count {committed}")
        try:
            fd = cls._lock_rows(work)
        except FileNotFoundError:
            raise _Stale(f"{ROWS_NAME} is missing") from None
        try:
            dtype = row_dtype(dim)
            size = os.fstat(fd).st_size
            if size < committed * dtype.itemsize:
                raise _Stale(
                    f"{ROWS_NAME} holds {size // dtype.itemsize} whole rows, "
                    f"progress says {committed} are committed"
                )
            # Drop a half-written commit: those rows were never acknowledged.
            os.ftruncate(fd, committed * dtype.itemsize)
            records = np.fromfile(work / ROWS_NAME, dtype=dtype, count=committed)["record"].copy()
            if np.unique(records).size != records.size:
                raise _Stale("duplicated record numbers among committed rows")
        except BaseException:
            os.close(fd)
            raise
        if size > committed * dtype.itemsize:
            tail = size - committed * dtype.itemsize
            log.info("%s: dropped an uncommitted tail of %d bytes", work, tail)
        log.info("%s: resuming with %d committed records", work, committed)
        return cls(work, fingerprint, dim, fd, records, every_records, every_seconds)

    # ---------------------------------------------------------------- the loop
    @property
    def n_committed(self) -> int:
        return int(self._committed.size)

    @property
    def n_buffered(self) -> int:
        return self._buffered

    def committed_records(self) -> np.ndarray:
        """Record numbers already committed (int64, in commit order)."""
        return self._committed.copy()

    def append(self, records: np.ndarray, embeddings: np.ndarray) -> None:
        """Buffer rows in memory; nothing reaches disk before :meth:`commit`."""
        self._check_open()
        records = np.asarray(records, dtype=np.int64).reshape(-1)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape != (records.size, self.dim):
            raise ValueError(
                f"embeddings must have shape ({records.size}, {self.dim}), got {embeddings.shape}"
            )
        if records.size == 0:
            return
        if (records < 0).any():
            raise ValueError("record numbers must be >= 0")
        if np.unique(records).size != records.size:
            raise ValueError("duplicated record numbers within one append")
        done = self._committed_sorted
        if done.size:
            pos = np.clip(np.searchsorted(done, records), 0, done.size - 1)
            again = records[done[pos] == records]
            if again.size:
                raise ValueError(f"records already committed: {again[:5].tolist()}")
        rows = np.empty(records.size, dtype=self._dtype)
        rows["record"] = records
        rows["embedding"] = embeddings
        self._buffer.append(rows)
        self._buffered += records.size

    def should_commit(self) -> bool:
        """True when enough rows are buffered, or the last commit is long enough ago."""
        if not self._buffered:
            return False
        return (
            self._buffered >= self.every_records
            or time.monotonic() - self._last_commit >= self.every_seconds
        )

    def commit(self) -> int:
        """Make the buffered rows durable; return the number of rows committed now."""
        self._check_open()
        self._last_commit = time.monotonic()
        if not self._buffered:
            return 0
        rows = np.concatenate(self._buffer)
        if np.unique(rows["record"]).size != rows.size:
            raise ValueError("duplicated record numbers among buffered rows")
        # 1. rows, made durable; 2. only then the count that makes them committed.
        # Written at the end of the committed rows, so the leftovers of a commit that failed
        # (ENOSPC, EIO) are overwritten rather than shifting the rows after them.
        _write_at(self._fd, rows.tobytes(), self.n_committed * self._dtype.itemsize)
        os.fsync(self._fd)
        committed = np.concatenate([self._committed, rows["record"]])
        _write_progress(
            self.work_path,
            {
                "format": WORK_FORMAT,
                "fingerprint": self.fingerprint,
                "dim": self.dim,
                "committed": int(committed.size),
            },
        )
        self._committed = committed
        self._committed_sorted = np.sort(committed)
        self._buffer.clear()
        self._buffered = 0
        return int(rows.size)

    def committed_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(records, embeddings) of every committed row, in record order."""
        self._check_open()
        rows = np.fromfile(self.work_path / ROWS_NAME, dtype=self._dtype, count=self.n_committed)
        order = np.argsort(rows["record"], kind="stable")
        rows = rows[order]
        return rows["record"].copy(), np.ascontiguousarray(rows["embedding"], dtype=np.float32)

    def finalize(
        self,
        out_path: str | os.PathLike,
        attrs: Mapping[str, Any],
        ids: Sequence[str] | None = None,
        copies: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Path:
        """Commit what is buffered, write the declared output atomically, delete the work state.

        The output holds ``records`` (int64, ascending), ``embeddings`` (float32, N x dim, same
        order), optionally ``ids`` (one per row, in record order) and ``attrs`` as HDF5
        attributes; ``fingerprint`` is added unless ``attrs`` has one. ``copies`` (records,
        their source records) adds rows that repeat a committed record's embedding.
        """
        self.commit()
        records, embeddings = self.committed_rows()
        if copies is not None:
            records, embeddings = expand_copies(records, embeddings, *copies)
        if ids is not None and len(ids) != records.size:
            raise ValueError(f"{len(ids)} ids for {records.size} records")
        attrs = dict(attrs)
        attrs.setdefault("fingerprint", self.fingerprint)
        for key, value in attrs.items():
            check_attr(key, value)
        out = Path(out_path)
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
            h5.create_dataset("records", data=records, dtype=np.int64)
            h5.create_dataset("embeddings", data=embeddings, dtype=np.float32)
            if ids is not None:
                h5.create_dataset("ids", data=list(ids), dtype=h5py.string_dtype("utf-8"))
            for key, value in attrs.items():
                h5.attrs[key] = value
        self.close()
        shutil.rmtree(self.work_path)
        return out

    def close(self) -> None:
        """Release the work directory; buffered (uncommitted) rows are dropped."""
        if self._fd is not None:
            os.close(self._fd)  # also releases the flock
            self._fd = None
        if self._buffered:
            log.debug("%s: closing with %d uncommitted rows", self.work_path, self._buffered)
        self._buffer.clear()
        self._buffered = 0

    def _check_open(self) -> None:
        if self._fd is None:
            raise RuntimeError(f"{self.work_path}: checkpoint is closed")

    def __enter__(self) -> ShardCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def read_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(records, embeddings, attrs) of a finished shard file written by :meth:`finalize`."""
    with h5py.File(path, "r") as h5:
        records = h5["records"][()].astype(np.int64, copy=False)
        embeddings = h5["embeddings"][()].astype(np.float32, copy=False)
        attrs = {key: plain_attr(value) for key, value in h5.attrs.items()}
    return records, embeddings, attrs


def plain_attr(value: Any) -> Any:
    """h5py attribute value -> Python str/int/float/bool where possible."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
