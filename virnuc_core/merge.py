"""Putting shard outputs together: per-model embeddings in index order, then features.h5.

Both writers stream in blocks of rows (about ``block_bytes`` of embeddings at a time), so memory
does not grow with the number of records, and write their output beside its final name,
renaming it into place only when complete (:func:`virnuc_core.files.atomic_path`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from virnuc_core.files import atomic_path
from virnuc_core.store import check_attr, plain_attr

BLOCK_BYTES = 64 << 20
STR = h5py.string_dtype("utf-8")


def _block_rows(dim: int, block_bytes: int) -> int:
    return max(1, block_bytes // max(1, 4 * dim))


def _examples(values: np.ndarray, k: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:k].tolist())
    return f"[{shown}{', ...' if values.size > k else ''}]"


def merge_shards(
    shard_paths: Sequence[str | os.PathLike],
    n_records: int,
    out_path: str | os.PathLike,
    ids: Sequence[str],
    attrs: Mapping[str, Any],
    block_bytes: int = BLOCK_BYTES,
) -> Path:
    """Merge finished shard files into one file with ``ids`` and ``embeddings`` in index order.

    Every record ``0 .. n_records-1`` must be present in exactly one shard; otherwise a
    :class:`ValueError` names how many are missing, duplicated or out of range, with examples.
    The shards must agree on the embedding dim and (where they carry one) on ``fingerprint``.
    ``attrs`` become the output's HDF5 attributes.
    """
    if len(ids) != n_records:
        raise ValueError(f"{len(ids)} ids for {n_records} records")
    attrs = dict(attrs)
    for key, value in attrs.items():
        check_attr(key, value)
    out = Path(out_path)
    with contextlib.ExitStack() as stack:
        shards = [stack.enter_context(h5py.File(p, "r")) for p in shard_paths]
        if not shards:
            raise ValueError("no shard files to merge")
        records, dims, fingerprints = [], set(), set()
        for path, h5 in zip(shard_paths, shards, strict=True):
            rec = h5["records"][()].astype(np.int64, copy=False)
            if rec.size > 1 and (np.diff(rec) <= 0).any():
                raise ValueError(f"{path}: records are not strictly ascending")
            emb = h5["embeddings"]
            if emb.ndim != 2 or emb.shape[0] != rec.size:
                raise ValueError(f"{path}: embeddings shape {emb.shape} for {rec.size} records")
            records.append(rec)
            dims.add(int(emb.shape[1]))
            if "fingerprint" in h5.attrs:
                fingerprints.add(plain_attr(h5.attrs["fingerprint"]))
        if len(dims) != 1:
            raise ValueError(f"shards disagree on the embedding dim: {sorted(dims)}")
        if len(fingerprints) > 1:
            raise ValueError(f"shards were made with different settings: {sorted(fingerprints)}")
        dim = dims.pop()
        _check_coverage(records, n_records, len(shards))

        step = _block_rows(dim, block_bytes)
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
            dst.create_dataset("ids", data=list(ids), dtype=STR)
            emb_out = dst.create_dataset("embeddings", shape=(n_records, dim), dtype=np.float32)
            for start in range(0, n_records, step):
                stop = min(n_records, start + step)
                block = np.empty((stop - start, dim), dtype=np.float32)
                for rec, h5 in zip(records, shards, strict=True):
                    lo, hi = np.searchsorted(rec, [start, stop])
                    if hi > lo:
                        block[rec[lo:hi] - start] = h5["embeddings"][lo:hi]
                emb_out[start:stop] = block
            for key, value in attrs.items():
                dst.attrs[key] = value
    return out


def _check_coverage(records: Sequence[np.ndarray], n_records: int, n_shards: int) -> None:
    allrec = np.concatenate(records) if records else np.empty(0, np.int64)
    bad = allrec[(allrec < 0) | (allrec >= n_records)]
    counts = np.bincount(allrec[(allrec >= 0) & (allrec < n_records)], minlength=n_records)
    missing = np.flatnonzero(counts == 0)
    doubled = np.flatnonzero(counts > 1)
    if missing.size or doubled.size or bad.size:
        parts = []
        if missing.size:
            parts.append(f"{missing.size} missing (e.g. {_examples(missing)})")
        if doubled.size:
            parts.append(f"{doubled.size} present more than once (e.g. {_examples(doubled)})")
        if bad.size:
            parts.append(f"{bad.size} out of range 0..{n_records - 1} (e.g. {_examples(bad)})")
        raise ValueError(f"merging {n_shards} shards for {n_records} records: " + "; ".join(parts))


def write_features(
    dnabert_path: str | os.PathLike,
    esm_path: str | os.PathLike,
    out_path: str | os.PathLike,
    block_bytes: int = BLOCK_BYTES,
) -> Path:
    """Write ``features.h5`` with ``ids``, ``dnabert`` and ``esm`` from the two merged files.

    The two inputs must list the same ids in the same order. Their attributes are copied with the
    prefixes ``dnabert.`` and ``esm.``.
    """
    out = Path(out_path)
    with (
        h5py.File(dnabert_path, "r") as dna,
        h5py.File(esm_path, "r") as esm,
    ):
        dna_ids = dna["ids"].asstr()[()]
        esm_ids = esm["ids"].asstr()[()]
        if dna_ids.shape != esm_ids.shape:
            raise ValueError(
                f"id lists differ in length: {dnabert_path} has {dna_ids.size}, "
                f"{esm_path} has {esm_ids.size}"
            )
        differ = np.flatnonzero(dna_ids != esm_ids)
        if differ.size:
            i = int(differ[0])
            raise ValueError(
                f"{differ.size} ids differ between {dnabert_path} and {esm_path}; "
                f"first at index {i}: {dna_ids[i]!r} vs {esm_ids[i]!r}"
            )
        n = dna_ids.size
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
            dst.create_dataset("ids", data=dna_ids.tolist(), dtype=STR)
            for name, src in (("dnabert", dna), ("esm", esm)):
                emb = src["embeddings"]
                if emb.shape[0] != n:
                    raise ValueError(f"{src.filename}: {emb.shape[0]} embeddings for {n} ids")
                out_ds = dst.create_dataset(name, shape=emb.shape, dtype=np.float32)
                step = _block_rows(int(emb.shape[1]), block_bytes)
                for start in range(0, n, step):
                    out_ds[start : start + step] = emb[start : start + step]
                for key, value in src.attrs.items():
                    dst.attrs[f"{name}.{key}"] = value
    return out
