"""``features.h5``: the classifier's input, built from the shard files without copying them.

Each model's shard files hold contiguous record ranges in order (:mod:`virnuc_core.jobs.plan`), so
the model's embeddings in record order are the shard files one after the other. ``features.h5``
holds ``ids`` (one per frame, streamed from ``frames.fa``) and, per model, a virtual dataset
(``dnabert``, ``esm``: float32, N x dim) that maps the shards' ``embeddings``: each embedding is
stored once, in its shard file. The source paths are relative to ``features.h5``'s folder, so the
sample's results folder can be moved or copied as a whole; a missing source reads as NaN (never
as silent zeros), and :func:`open_features` refuses to read when a source is missing.
Every reader takes rows through :func:`checked_rows`: a chunk that fails its checksum (see
:func:`virnuc_core.jobs.finalize.checked_layout`) or a NaN or infinite value is refused, naming the
shard file, the frame and what to do (:class:`DamagedFileError`).
Attributes: both models' settings and encoder description, prefixed ``dnabert.`` / ``esm.``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from virnuc_core.data.index import open_index, read_ids
from virnuc_core.registry import FAMILIES
from virnuc_core.util.files import atomic_path

STR = h5py.string_dtype("utf-8")
IDS_BLOCK = 1 << 16  # ids written at a time (Python strings: about 50 MB at the peak)
# Per-job attributes that say nothing about how the features were made.
_PER_JOB = ("token_budget", "device", "distinct_sequences", "records_lo", "records_hi")


class FeaturesError(ValueError):
    """features.h5 cannot be used as it is; the message says why and what to do."""


class DamagedFileError(FeaturesError):
    """A shard file's rows are damaged (a chunk fails its checksum, or a value is not finite)."""


def plain_attr(value: Any) -> Any:
    """h5py attribute value -> Python str/int/float/bool where possible."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def redo(path: str | os.PathLike) -> str:
    return f"delete {os.fspath(path)!r} and run the same command again"


def _sources(dset: h5py.Dataset) -> list[tuple[int, int, Path]]:
    """(first row, end row, shard file) of each part of ``dset``: the shards a virtual dataset
    maps, or the shard file itself."""
    if not dset.is_virtual:
        return [(0, dset.shape[0], Path(dset.file.filename))]
    base = Path(dset.file.filename).parent
    out = []
    for src in dset.virtual_sources():
        (start, _), (end, _) = src.vspace.get_select_bounds()
        out.append((int(start), int(end) + 1, base / src.file_name))
    return out


def _damaged_chunk(path: Path, frame: int, lo: int, hi: int) -> DamagedFileError | None:
    """The error for the first chunk of rows ``lo .. hi-1`` of shard file ``path`` (its row 0
    is frame ``frame``) that cannot be read; None when every one reads."""
    try:
        with h5py.File(path, "r") as h5:
            emb = h5["embeddings"]
            step = emb.chunks[0] if emb.chunks else max(1, hi - lo)
            for a in range(lo // step * step, hi, step):
                b = min(a + step, emb.shape[0])
                try:
                    emb[a:b]
                except OSError as err:
                    return DamagedFileError(
                        f"{os.fspath(path)!r}: frames {frame + a}..{frame + b - 1} are damaged "
                        f"({err}): {redo(path)}"
                    )
    except (OSError, KeyError) as err:
        return DamagedFileError(f"{os.fspath(path)!r} cannot be read ({err}): {redo(path)}")
    return None


def checked_rows(dset: h5py.Dataset, sel: slice | np.ndarray, what: str = "") -> np.ndarray:
    """``dset[sel]`` (a model's rows: ``features.h5``'s virtual dataset, or a shard file's
    ``embeddings``), refused with :class:`DamagedFileError` naming the shard file, the frame
    and what to do when a chunk fails its checksum or a value is NaN or infinite."""
    try:
        rows = dset[sel]
    except OSError as err:
        raise _damage(dset, _rows_of(dset.shape[0], sel), err) from err
    if np.isfinite(rows).all():
        return rows
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))[0]
    row = int(_rows_of(dset.shape[0], sel)[bad])
    path = next(p for start, end, p in _sources(dset) if start <= row < end)
    frame = row + _first_frame(dset)
    raise DamagedFileError(
        f"{os.fspath(path)!r}: frame {frame}: its {what or dset.name.strip('/')} embedding holds "
        f"NaN or an infinite value: the file is damaged; {redo(path)}"
    )


def _rows_of(n: int, sel: slice | np.ndarray) -> np.ndarray:
    """The row numbers ``sel`` picks of ``n`` rows (as many as it picks, not ``n``)."""
    if isinstance(sel, slice):
        return np.arange(*sel.indices(n))
    sel = np.asarray(sel)
    return np.flatnonzero(sel) if sel.dtype == bool else sel.astype(np.int64)


def _first_frame(dset: h5py.Dataset) -> int:
    """The frame of ``dset``'s row 0: 0 in ``features.h5``, ``records_lo`` in a shard file."""
    return 0 if dset.is_virtual else int(dset.file.attrs.get("records_lo", 0))


def _damage(dset: h5py.Dataset, rows: np.ndarray, err: OSError) -> DamagedFileError:
    """The shard file and frames of ``rows`` whose chunk does not read."""
    for start, end, path in _sources(dset):
        inside = rows[(rows >= start) & (rows < end)] - start
        if inside.size:
            frame = start + _first_frame(dset)
            found = _damaged_chunk(path, frame, int(inside.min()), int(inside.max()) + 1)
            if found is not None:
                return found
    return DamagedFileError(f"{dset.file.filename!r}: {err}")


def _shard_layout(paths: Sequence[str | os.PathLike], n: int, base: Path):
    """A virtual layout (n x dim) over the shard files' embeddings, and the first shard's
    attributes (minus per-job ones)."""
    dims, attrs, row = set(), {}, 0
    sources = []
    for path in paths:
        with h5py.File(path, "r") as h5:
            shape = h5["embeddings"].shape
            lo = int(h5.attrs.get("records_lo", row))
            if lo != row:
                raise FeaturesError(f"{path}: starts at record {lo}, expected {row}")
            dims.add(shape[1])
            if not attrs:
                attrs = {k: plain_attr(v) for k, v in h5.attrs.items() if not _per_job(k)}
        sources.append((os.path.relpath(path, base), row, shape))
        row += shape[0]
    if row != n or len(dims) != 1:
        raise FeaturesError(f"shards hold {row} rows of dims {sorted(dims)}; the index has {n}")
    dim = dims.pop()
    layout = h5py.VirtualLayout(shape=(n, dim), dtype="<f4")
    for rel, start, shape in sources:
        if shape[0]:
            layout[start : start + shape[0]] = h5py.VirtualSource(rel, "embeddings", shape=shape)
    return layout, attrs


def _per_job(key: str) -> bool:
    return key in _PER_JOB or key.startswith("metrics.")


def write_features(
    shards: Mapping[str, Sequence[str | os.PathLike]],
    index_npy: str | os.PathLike,
    frames_fa: str | os.PathLike,
    out_path: str | os.PathLike,
    ids_block: int = IDS_BLOCK,
) -> Path:
    """Write ``features.h5`` (see the module docstring) for ``shards`` (model -> its shard files
    in order). The shards must together hold every record of the index exactly once, in order."""
    out = Path(out_path)
    index = open_index(index_npy)
    n = index.rows
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
        ids = dst.create_dataset("ids", shape=(n,), dtype=STR)
        for lo in range(0, n, ids_block):
            hi = min(n, lo + ids_block)
            ids[lo:hi] = read_ids(frames_fa, index, lo, hi)
        for model, paths in shards.items():
            layout, attrs = _shard_layout(paths, n, out.parent)
            dst.create_virtual_dataset(model, layout, fillvalue=np.nan)
            for key, value in attrs.items():
                dst.attrs[f"{model}.{key}"] = value
    return out


@contextlib.contextmanager
def open_features(path: str | os.PathLike) -> Iterator[h5py.File]:
    """``features.h5`` opened for reading, after checking that every shard it maps is there."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        for name in FAMILIES:
            if name in f and f[name].is_virtual:
                for source in f[name].virtual_sources():
                    where = path.parent / source.file_name
                    if not where.is_file():
                        raise FeaturesError(
                            f"{path}: its {name} embeddings are in {where}, which is missing: "
                            "keep the sample's results folder whole (or rerun the workflow)"
                        )
        yield f


def feature_blocks(
    f: h5py.File, block_rows: int, models: Sequence[str] = tuple(FAMILIES)
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(lo, hi, concat of the models' rows lo .. hi-1) in the families' order (DNABERT-S
    first, as the classifier takes them), block by block."""
    n = f["ids"].shape[0]
    for lo in range(0, n, block_rows):
        hi = min(n, lo + block_rows)
        yield lo, hi, np.concatenate([checked_rows(f[m], slice(lo, hi)) for m in models], axis=1)


def shard_rows(paths: Sequence[str | os.PathLike], records: np.ndarray) -> np.ndarray:
    """The embeddings of ``records`` (ascending) from one model's shard files (in order)."""
    records = np.asarray(records, np.int64)
    out, row = [], 0
    for path in paths:
        with h5py.File(path, "r") as h5:
            emb = h5["embeddings"]
            lo, hi = row, row + emb.shape[0]
            take = records[(records >= lo) & (records < hi)]
            if take.size:  # rows of the file (whose records_lo is lo)
                out.append(checked_rows(emb, take - lo, str(h5.attrs.get("model", ""))))
            dim, row = emb.shape[1], hi
    if records.size and (records.max() >= row or records.min() < 0):
        raise FeaturesError(f"records beyond the {row} rows of the shard files")
    return np.concatenate(out) if out else np.zeros((0, dim if paths else 0), np.float32)
