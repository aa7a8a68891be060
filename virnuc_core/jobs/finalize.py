"""A shard's finished HDF5 file, from its embed job's rows and, for copies, earlier shards.

The embed job leaves its rows (distinct sequences only, in commit order, checksummed: see
`virnuc_core.jobs.shard_rows.ShardRows`). :func:`finalize_shard` writes the shard's embeddings for
every record of its range, in record order, a block at a time: a distinct record takes its own
row; a copy takes its source's row, from this job's rows or from the finished file of the earlier
shard holding the source. Rows are checked against their checksums before any is used. The file
is written aside and renamed into place when complete. Its datasets: ``records`` (int64, the
range ``lo .. hi-1``), ``embeddings`` (float32, n x dim), both in chunks that carry HDF5's
Fletcher-32 checksum, which HDF5 checks on every read (a damaged chunk raises OSError, never
reads as other values: :func:`checked_layout`); attributes: the job's settings, the
encoder's description, the device and the job's metrics (``metrics.*``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from virnuc_core.jobs.shard_rows import ShardRows
from virnuc_core.util.files import atomic_path
from virnuc_core.util.npyfile import NpyReader

log = logging.getLogger("virnuc.finalize")

BLOCK_BYTES = 64 << 20  # embeddings written at a time
# An HDF5 chunk of the embeddings: a copy from an earlier shard reads (and checks) a whole
# chunk for one row, so small ones (12 ESM-2 rows); sequential reads are as fast as with 1 MiB
CHUNK_BYTES = 128 << 10


def checked_layout(rows: int, dim: int) -> dict[str, Any]:
    """``create_dataset`` arguments for ``rows`` x ``dim`` float32 rows stored in chunks of
    about :data:`CHUNK_BYTES`, each with a Fletcher-32 checksum (none for an empty dataset:
    HDF5 cannot chunk it, and it holds nothing to damage)."""
    if rows == 0:
        return {}
    return {"chunks": (max(1, min(rows, CHUNK_BYTES // (4 * dim))), dim), "fletcher32": True}


def check_attr(key: str, value: Any) -> None:
    """Raise TypeError unless ``value`` can be an HDF5 attribute of ours (str/int/float/bool)."""
    if not isinstance(key, str) or not isinstance(value, str | int | float | bool | np.generic):
        raise TypeError(
            f"HDF5 attribute {key!r} must be str/int/float/bool, got {type(value).__name__}"
        )


def shard_attrs(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The HDF5 attributes of a shard file from its job's ``meta.json``."""
    attrs = dict(meta["attrs"])
    attrs.update({f"metrics.{k}": v for k, v in meta.get("metrics", {}).items()})
    for key, value in attrs.items():
        check_attr(key, value)
    return attrs


class _Sources:
    """Where each record's row comes from: this job's rows, or an earlier shard's file."""

    def __init__(self, rows: ShardRows, sources: np.ndarray, earlier: Sequence[tuple]) -> None:
        self.rows, self.lo = rows, rows.lo
        self.positions = rows.positions()  # checks every checksum first
        self.sources = sources
        self.earlier = sorted(earlier)  # (lo, hi, path) of shards before this one
        self._files: dict[str, h5py.File] = {}
        own = sources[sources >= self.lo] - self.lo
        missing = own[self.positions[own] < 0]
        if missing.size:
            raise ValueError(
                f"{rows.path}: no row for records {(missing[:5] + self.lo).tolist()} (of "
                f"{missing.size}): the embed job's output is incomplete; delete it and rerun"
            )
        outside = sources[sources < self.lo]
        if outside.size and not self._covered(outside):
            raise ValueError(f"{rows.path}: copies whose source is in no earlier shard given")

    def _covered(self, records: np.ndarray) -> bool:
        ok = np.zeros(records.size, bool)
        for lo, hi, _ in self.earlier:
            ok |= (records >= lo) & (records < hi)
        return bool(ok.all())

    def block(self, a: int, b: int, dim: int) -> np.ndarray:
        """Embeddings of records ``a .. b-1`` of the range."""
        src = self.sources[a - self.lo : b - self.lo]
        out = np.empty((src.size, dim), np.float32)
        mine = src >= self.lo
        from virnuc_core.jobs.merge import checked_rows, redo

        own = self.rows.gather(self.positions[src[mine] - self.lo])
        if not np.isfinite(own).all():  # never written into a shard file
            frame = int(src[mine][np.flatnonzero(~np.isfinite(own).all(axis=1))[0]])
            raise ValueError(
                f"{self.rows.path}: the embed job's row of frame {frame} holds NaN or an "
                "infinite value: the model overflowed on that frame (with precision fp16 or "
                "bf16, set precision: fp32 in the config) or the rows were damaged on disk; "
                f"{redo(self.rows.path)}"
            )
        out[mine] = own
        for lo, hi, path in self.earlier:  # checked: a damaged file is named, never copied
            take = (src >= lo) & (src < hi)
            if take.any():
                wanted, inverse = np.unique(src[take] - lo, return_inverse=True)
                out[take] = checked_rows(self._file(path)["embeddings"], wanted)[inverse]
        return out

    def _file(self, path: str) -> h5py.File:
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def finalize_shard(
    rows_dir: str | os.PathLike,
    sources_npy: str | os.PathLike,
    earlier: Sequence[tuple[int, int, str]],
    out_h5: str | os.PathLike,
    block_bytes: int = BLOCK_BYTES,
) -> Path:
    """Write the shard file ``out_h5`` from ``rows_dir`` (see the module docstring).

    ``earlier``: (lo, hi, path) of the finished files of the shards before this one whose
    records copies may take (all of them, or none without duplicate removal).
    """
    rows = ShardRows(rows_dir)
    lo, hi, dim = rows.lo, rows.hi, rows.dim
    sources = NpyReader(sources_npy, np.dtype("<i8")).read(lo, hi)
    if sources.size != hi - lo or (sources > np.arange(lo, hi)).any():
        raise ValueError(f"{sources_npy}: sources of records {lo}..{hi - 1} are not valid")
    attrs = shard_attrs(rows.meta)
    copies = int((sources != np.arange(lo, hi)).sum())
    attrs.update(distinct_sequences=hi - lo - copies, records_lo=lo, records_hi=hi)
    layout = checked_layout(hi - lo, dim)
    chunk = layout["chunks"][0] if layout else 1
    step = max(1, block_bytes // (4 * dim) // chunk) * chunk  # whole chunks at a time
    with contextlib.ExitStack() as stack:
        src = _Sources(rows, sources, earlier)
        stack.callback(src.close)
        tmp = stack.enter_context(atomic_path(out_h5))
        with h5py.File(tmp, "w") as h5:
            records = np.arange(lo, hi, dtype=np.int64)
            h5.create_dataset("records", data=records, fletcher32=bool(records.size))
            emb = h5.create_dataset("embeddings", shape=(hi - lo, dim), dtype="<f4", **layout)
            for a in range(lo, hi, step):
                b = min(hi, a + step)
                emb[a - lo : b - lo] = src.block(a, b, dim)
            h5.attrs.update(attrs)
    log.info("%s: %d records (%d copies), from %s", out_h5, hi - lo, copies, rows_dir)
    return Path(out_h5)
