"""Exact-duplicate sequences: embed each distinct sequence once, copy its row to the others.

Real read sets repeat themselves (PCR and optical duplicates, conserved regions), and identical
sequences get identical embeddings. ``first_occurrences`` maps every record to the first record
with byte-identical sequence: 128-bit BLAKE2b digests find the candidates, a byte comparison
confirms each one, so a digest collision can never merge two different sequences.
"""

from __future__ import annotations

import hashlib
import mmap
import os

import numpy as np


def first_occurrences(
    path: str | os.PathLike, offsets: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """For each sequence line (byte ``offsets``/``lengths`` in ``path``), the index of the first
    sequence with the same bytes (itself if it is the first); int64, same length as offsets."""
    offsets, lengths = np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)
    if offsets.size == 0:
        return np.zeros(0, dtype=np.int64)
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        spans = list(zip(offsets.tolist(), (offsets + lengths).tolist(), strict=True))
        digests = b"".join(hashlib.blake2b(mm[a:b], digest_size=16).digest() for a, b in spans)
        keys = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        source = first[inverse.reshape(-1)].astype(np.int64)
        for r in np.flatnonzero(source != np.arange(source.size)).tolist():
            (a, b), (c, d) = spans[r], spans[source[r]]
            if mm[a:b] != mm[c:d]:  # pragma: no cover - a 128-bit collision
                raise RuntimeError(f"{path}: digest collision between sequences {source[r]}, {r}")
    return source


def shared_groups(*sources: np.ndarray) -> np.ndarray:
    """For each record, the smallest record it is linked to through any of ``sources`` (each
    record -> its first identical record, one array per model), transitively.

    Identical frames can translate to different proteins (an ambiguity code ends the frame
    before its last codons), so the per-model groups differ; a shard must hold whole groups of
    both. Label propagation: each round every record takes its source's label and every source
    the smallest label among its copies, until nothing changes (a few rounds: groups are stars).
    """
    label = np.arange(sources[0].size, dtype=np.int64)
    while True:
        new = label.copy()
        for src in sources:
            np.minimum.at(new, src, new)  # a first takes its copies' smallest label
            new = np.minimum(new, new[src])  # a copy takes its first's
        if np.array_equal(new, label):
            return label
        label = new


def expand_copies(
    records: np.ndarray, rows: np.ndarray, copies: np.ndarray, sources: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``copies`` to (``records``, ``rows``), each copy getting its source record's row.

    ``records`` and ``copies`` are disjoint; every source must be in ``records``. Returns all
    records ascending and their rows in the same order.
    """
    records, copies = np.asarray(records, np.int64), np.asarray(copies, np.int64)
    sources = np.asarray(sources, np.int64)
    order = np.argsort(records, kind="stable")
    at = np.searchsorted(records, sources, sorter=order)
    at = order[np.minimum(at, max(records.size - 1, 0))] if records.size else at
    if sources.size and (records.size == 0 or not np.array_equal(records[at], sources)):
        missing = np.setdiff1d(sources, records)[:5].tolist()
        raise ValueError(f"copies whose source record has no embedding, e.g. sources {missing}")
    all_records = np.concatenate([records, copies])
    all_rows = np.concatenate([rows, rows[at]]) if copies.size else rows
    keep = np.argsort(all_records, kind="stable")
    return all_records[keep], all_rows[keep]
