"""The rows of one (model, shard) embed job: a crash-safe, checksummed checkpoint.

Durability design
-----------------
The work state is a small directory kept outside Snakemake's declared outputs (HDF5 is not
crash-safe: a process killed while the library flushes metadata can leave a file that no longer
opens)::

    <work>/rows.bin       committed rows in commit order, fixed-size records:
                          int64 record number + float32[dim] embedding, little-endian
    <work>/blocks.bin     one entry per commit: int64 row count + the sha256 of those rows' bytes
    <work>/progress.json  {"format", "fingerprint", "dim", "lo", "hi", "rows", "blocks"}

:meth:`ShardCheckpoint.commit` (1) writes the buffered rows after the committed ones and
``fsync``\\ s them, (2) writes their block entry and ``fsync``\\ s it, and only then (3) writes
``progress.json`` to a temporary file, ``fsync``\\ s it, renames it over the old one and
``fsync``\\ s the directory. ``rename`` is atomic, so at any instant ``progress.json`` counts only
rows and blocks complete on disk; anything past them (a commit killed half way) is ignored and
truncated away on resume. This survives SIGKILL at any instant and, thanks to the ``fsync``
calls, a power loss too. A commit costs time in proportion to the rows it commits.

Resuming checks everything: the fingerprint (settings, model weights, the shard's record range
and the content of its index rows and sequences: see :mod:`virnuc_core.jobs.embed_job`), and every
committed block against its checksum. Work that fails any check is renamed to
``<name>.stale-<timestamp>`` with a WARNING on the ``virnuc.store`` logger and the job starts
fresh; set-aside folders are deleted when the shard completes (unless ``keep_stale``), and the log
says so. Only one process may write a work directory at a time (``flock`` on ``rows.bin``).

:meth:`ShardCheckpoint.complete` commits the rest, writes ``meta.json`` (the job's attributes and
metrics) and renames the directory to the job's declared output; :class:`ShardRows` reads such a
directory back, checking every block's checksum before a row is used
(:mod:`virnuc_core.jobs.finalize` turns it into the shard's HDF5 file).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from virnuc_core.util.files import hold_lock_fd, release_lock_fd

log = logging.getLogger("virnuc.store")

WORK_FORMAT = "virnuc-shard-work/2"
ROWS_NAME, BLOCKS_NAME = "rows.bin", "blocks.bin"
PROGRESS_NAME, META_NAME = "progress.json", "meta.json"
# The digest as 32 raw bytes: a fixed-width bytes field ("S32") would drop trailing NUL bytes.
BLOCK_DTYPE = np.dtype([("rows", "<i8"), ("sha256", "u1", (32,))])
READ_BYTES = 32 << 20  # rows read at a time when checking or gathering


def row_dtype(dim: int) -> np.dtype:
    """The on-disk record of ``rows.bin``: record number then the embedding."""
    return np.dtype([("record", "<i8"), ("embedding", "<f4", (dim,))])


class _Stale(Exception):
    """The work directory cannot be resumed; the message says why."""


class CorruptRows(RuntimeError):
    """A finished rows directory fails its checks; the message names the file and block."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_durably(path: Path, doc: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``doc`` as JSON atomically and durably (temp, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(dict(doc), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_at(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (whatever a failed earlier attempt left there)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


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


def _stale_folders(work: Path) -> list[Path]:
    return sorted(work.parent.glob(glob.escape(f"{work.name}.stale-") + "*"))


def _iter_blocks(fd: int, dtype: np.dtype, blocks: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(block number, bytes of its rows) in commit order, read from ``fd``."""
    offset = 0
    for b, count in enumerate(blocks["rows"].tolist()):
        size = count * dtype.itemsize
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise _Stale(f"{ROWS_NAME} ends inside block {b}")
        yield b, data
        offset += size


def _check_rows(fd: int, dtype: np.dtype, blocks: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Verify every block's sha256 and record numbers; return the per-record state mask
    (True = committed) over ``lo .. hi-1``. Raises _Stale naming the first bad block."""
    done = np.zeros(hi - lo, bool)
    for b, data in _iter_blocks(fd, dtype, blocks):
        if hashlib.sha256(data).digest() != blocks["sha256"][b].tobytes():
            raise _Stale(f"block {b} of {ROWS_NAME} does not match its checksum (changed on disk)")
        records = np.frombuffer(data, dtype)["record"]
        if records.size and (records.min() < lo or records.max() >= hi):
            raise _Stale(f"block {b} holds records outside the shard's range {lo}..{hi - 1}")
        local = records - lo
        if done[local].any() or np.unique(local).size != local.size:
            raise _Stale(f"block {b} repeats committed record numbers")
        done[local] = True
    return done


def _read_blocks(fd: int, n_blocks: int, n_rows: int) -> np.ndarray:
    """The first ``n_blocks`` checksum entries; they must account for ``n_rows`` rows."""
    data = os.pread(fd, n_blocks * BLOCK_DTYPE.itemsize, 0)
    if len(data) != n_blocks * BLOCK_DTYPE.itemsize:
        raise _Stale(f"{BLOCKS_NAME} does not account for the {n_rows} committed rows")
    blocks = np.frombuffer(data, BLOCK_DTYPE)
    if int(blocks["rows"].sum()) != n_rows:
        raise _Stale(f"{BLOCKS_NAME} does not account for the {n_rows} committed rows")
    return blocks


def _read_state(work: Path) -> dict:
    try:
        progress = json.loads((work / PROGRESS_NAME).read_text())
        for key in ("format", "fingerprint", "dim", "lo", "hi", "rows", "blocks"):
            progress[key]  # noqa: B018 - every key must be there
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Stale(f"unreadable progress file: {exc!r}") from None
    return progress


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{path.parent} is being written by another process") from None
    return hold_lock_fd(fd)


class ShardCheckpoint:
    """Resumable, crash-safe, checksummed store of one (model, shard) job's rows.

    Use :meth:`open`, never the constructor. Typical loop::

        with ShardCheckpoint.open(work, fingerprint, dim, lo, hi) as ckpt:
            for records, emb in batches(ckpt.pending(distinct)):
                ckpt.append(records, emb)
                if ckpt.should_commit():
                    ckpt.commit()
            ckpt.complete(output_dir, meta)

    ``close()`` (and leaving the ``with`` block) does *not* commit buffered rows: call
    :meth:`commit` yourself if the rows computed so far should be kept.
    """

    def __init__(self, work: Path, state: dict, fds: tuple[int, int], done: np.ndarray,
                 every_records: int, every_seconds: float, keep_stale: bool) -> None:  # fmt: skip
        self.work_path, self.state = work, state
        self.fingerprint, self.dim = state["fingerprint"], int(state["dim"])
        self.lo, self.hi = int(state["lo"]), int(state["hi"])
        self._dtype = row_dtype(self.dim)
        self._fds: tuple[int, int] | None = fds  # rows.bin (locked), blocks.bin
        self._status = done.astype(np.uint8) * 2  # 0 to do, 1 buffered, 2 committed
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.every_records, self.every_seconds = int(every_records), float(every_seconds)
        self.keep_stale = keep_stale
        self._last_commit = time.monotonic()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        work_path: str | os.PathLike,
        fingerprint: str,
        dim: int,
        lo: int,
        hi: int,
        every_records: int = 2000,
        every_seconds: float = 60.0,
        keep_stale: bool = False,
    ) -> ShardCheckpoint:
        """Resume the work directory if it was made from the same inputs and passes its
        checks, else set it aside (WARNING) and start fresh, for records ``lo .. hi-1``."""
        if dim <= 0 or hi < lo:
            raise ValueError(f"bad shard: dim {dim}, records {lo}..{hi - 1}")
        work = Path(work_path)
        want = {"format": WORK_FORMAT, "fingerprint": fingerprint, "dim": dim, "lo": lo, "hi": hi}
        args = (every_records, every_seconds, keep_stale)
        if work.exists() or work.is_symlink():
            try:
                return cls._resume(work, want, *args)
            except _Stale as exc:
                _set_aside(work, str(exc))
        return cls._fresh(work, want, *args)

    @classmethod
    def _fresh(cls, work: Path, want: dict, *args) -> ShardCheckpoint:
        work.parent.mkdir(parents=True, exist_ok=True)
        # Built under a temporary name, then renamed: a work directory either has a valid
        # progress file or does not exist.
        for old in work.parent.glob(glob.escape(f".{work.name}.new-") + "*"):  # a killed one's
            shutil.rmtree(old, ignore_errors=True)
        tmp = work.with_name(f".{work.name}.new-{os.getpid()}")
        tmp.mkdir()
        (tmp / ROWS_NAME).touch()
        (tmp / BLOCKS_NAME).touch()
        state = {**want, "rows": 0, "blocks": 0}
        write_json_durably(tmp / PROGRESS_NAME, state)
        os.replace(tmp, work)
        _fsync_dir(work.parent)
        fds = (_lock(work / ROWS_NAME), os.open(work / BLOCKS_NAME, os.O_RDWR))
        return cls(work, state, fds, np.zeros(want["hi"] - want["lo"], bool), *args)

    @classmethod
    def _resume(cls, work: Path, want: dict, *args) -> ShardCheckpoint:
        if not work.is_dir():
            raise _Stale("not a work directory (left by another version or tool?)")
        state = _read_state(work)
        for key, value in want.items():
            if state[key] != value:
                raise _Stale(f"{key} differs: work has {state[key]!r}, job has {value!r}")
        try:
            fd = _lock(work / ROWS_NAME)
        except FileNotFoundError:
            raise _Stale(f"{ROWS_NAME} is missing") from None
        try:
            dtype, n_rows, n_blocks = row_dtype(want["dim"]), int(state["rows"]), state["blocks"]
            bfd = os.open(work / BLOCKS_NAME, os.O_RDWR)
            blocks = _read_blocks(bfd, n_blocks, n_rows)
            done = _check_rows(fd, dtype, blocks, want["lo"], want["hi"])
            # Drop a half-written commit: those rows were never acknowledged.
            os.ftruncate(fd, n_rows * dtype.itemsize)
            os.ftruncate(bfd, n_blocks * BLOCK_DTYPE.itemsize)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(NameError, OSError):
                os.close(bfd)
            raise
        log.info("%s: resuming with %d committed records (checksums verified)", work, n_rows)
        return cls(work, state, (fd, bfd), done, *args)

    # ---------------------------------------------------------------- the loop
    @property
    def n_committed(self) -> int:
        return int(self.state["rows"])

    @property
    def n_buffered(self) -> int:
        return self._buffered

    def pending(self, records: np.ndarray) -> np.ndarray:
        """The given records (in this shard's range) that are not committed yet."""
        records = np.asarray(records, np.int64)
        return records[self._status[records - self.lo] != 2]

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
        if records.min() < self.lo or records.max() >= self.hi:
            raise ValueError(f"records outside the shard's range {self.lo}..{self.hi - 1}")
        local = records - self.lo
        if np.unique(local).size != local.size:
            raise ValueError("duplicated record numbers within one append")
        again = records[self._status[local] != 0]
        if again.size:
            raise ValueError(f"records already committed or buffered: {again[:5].tolist()}")
        rows = np.empty(records.size, dtype=self._dtype)
        rows["record"], rows["embedding"] = records, embeddings
        self._buffer.append(rows)
        self._status[local] = 1
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
        rows_fd, blocks_fd = self._fds
        data = np.concatenate(self._buffer).tobytes()
        entry = np.zeros(1, BLOCK_DTYPE)
        entry["rows"] = self._buffered
        entry["sha256"] = np.frombuffer(hashlib.sha256(data).digest(), np.uint8)
        # 1. rows, 2. their checksum, each made durable; 3. only then the counts that make them
        # committed. Written at the end of the committed data, so the leftovers of a commit that
        # failed (ENOSPC, EIO) are overwritten rather than shifting what follows.
        _write_at(rows_fd, data, self.n_committed * self._dtype.itemsize)
        os.fsync(rows_fd)
        _write_at(blocks_fd, entry.tobytes(), self.state["blocks"] * BLOCK_DTYPE.itemsize)
        os.fsync(blocks_fd)
        state = dict(self.state, rows=self.n_committed + self._buffered)
        state["blocks"] += 1
        write_json_durably(self.work_path / PROGRESS_NAME, state)
        self.state = state
        self._status[self._status == 1] = 2
        n, self._buffer, self._buffered = self._buffered, [], 0
        return n

    def complete(self, output: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
        """Commit what is buffered, write ``meta.json`` and move the work directory to
        ``output`` (the job's declared output); delete set-aside work of this shard."""
        self.commit()
        write_json_durably(self.work_path / META_NAME, meta)
        self.close()
        out = Path(output)
        if out.exists():  # left by an earlier, failed attempt at the move
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.work_path, out)
        _fsync_dir(out.parent)
        _fsync_dir(self.work_path.parent)
        stale = _stale_folders(self.work_path)
        if stale and not self.keep_stale:
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
            log.info("deleted %d set-aside work folder(s): %s", len(stale), [p.name for p in stale])
        return out

    def close(self) -> None:
        """Release the work directory; buffered (uncommitted) rows are dropped."""
        if self._fds is not None:
            release_lock_fd(self._fds[0])  # releases the flock (children closed theirs)
            os.close(self._fds[1])
            self._fds = None
        if self._buffered:
            log.debug("%s: closing with %d uncommitted rows", self.work_path, self._buffered)
        self._status[self._status == 1] = 0
        self._buffer, self._buffered = [], 0

    def _check_open(self) -> None:
        if self._fds is None:
            raise RuntimeError(f"{self.work_path}: checkpoint is closed")

    def __enter__(self) -> ShardCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
