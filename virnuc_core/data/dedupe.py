"""Exact-duplicate sequences: embed each distinct sequence once, copy its row to the others.

Real read sets repeat themselves (PCR and optical duplicates, conserved regions), and identical
sequences get identical embeddings. :func:`first_occurrences` maps every record to the first
record with byte-identical sequence: 128-bit BLAKE2b digests find the candidates, a byte
comparison confirms each one, so a digest collision can never merge two different sequences.

Memory: the digests (16 bytes a record) and a sort over them, about 50 bytes a record at the
peak; sequences are read in blocks of consecutive records (one read of the file span they lie
in), never held whole.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

BLOCK_BYTES = 16 << 20  # bytes of sequence file read at a time


def _blocks(offsets: np.ndarray, block_bytes: int):
    """(lo, hi) ranges of consecutive records whose file span is about ``block_bytes``."""
    n = offsets.size
    lo = 0
    while lo < n:
        limit = offsets[lo] + block_bytes
        hi = max(lo + 1, int(np.searchsorted(offsets, limit, side="right")))
        yield lo, min(hi, n)
        lo = hi


def _digests(path, offsets: np.ndarray, lengths: np.ndarray, block_bytes: int) -> np.ndarray:
    """(n, 2) uint64: the 128-bit BLAKE2b digest of every sequence line."""
    out = np.empty((offsets.size, 2), np.uint64)
    flat = out.view(np.uint8).reshape(-1, 16)
    with open(path, "rb") as handle:
        for lo, hi in _blocks(offsets, block_bytes):
            base = int(offsets[lo])
            handle.seek(base)
            data = handle.read(int(offsets[hi - 1] + lengths[hi - 1]) - base)
            starts = (offsets[lo:hi] - base).tolist()
            ends = (offsets[lo:hi] + lengths[lo:hi] - base).tolist()
            digests = b"".join(
                hashlib.blake2b(data[a:b], digest_size=16).digest()
                for a, b in zip(starts, ends, strict=True)
            )
            flat[lo:hi] = np.frombuffer(digests, np.uint8).reshape(-1, 16)
    return out


def _confirm(path, offsets: np.ndarray, lengths: np.ndarray, source: np.ndarray) -> None:
    """Check that every record's bytes equal its source's (a digest collision is an error)."""
    copies = np.flatnonzero(source != np.arange(source.size))
    if copies.size == 0:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        for r, s in zip(copies.tolist(), source[copies].tolist(), strict=True):
            n = int(lengths[r])
            if n != lengths[s] or os.pread(fd, n, int(offsets[r])) != os.pread(
                fd, n, int(offsets[s])
            ):  # pragma: no cover - a 128-bit collision
                raise RuntimeError(f"{path}: digest collision between sequences {s} and {r}")
    finally:
        os.close(fd)


def first_occurrences(
    path: str | os.PathLike,
    offsets: np.ndarray,
    lengths: np.ndarray,
    block_bytes: int = BLOCK_BYTES,
) -> np.ndarray:
    """For each sequence line (byte ``offsets``/``lengths`` in ``path``, ascending offsets), the
    index of the first sequence with the same bytes (itself if it is the first); int64."""
    offsets, lengths = np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)
    if offsets.size == 0:
        return np.zeros(0, dtype=np.int64)
    if offsets.size > 1 and (np.diff(offsets) <= 0).any():
        raise ValueError(f"{path}: sequence offsets must ascend")
    keys = _digests(path, offsets, lengths, block_bytes)
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal keys keep record order
    sorted_keys = keys[order]
    del keys
    new_group = np.ones(order.size, bool)
    new_group[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(axis=1)
    del sorted_keys
    group_first = order[np.flatnonzero(new_group)]  # the smallest record of each group
    source = np.empty(order.size, np.int64)
    source[order] = group_first[np.cumsum(new_group) - 1]
    _confirm(path, offsets, lengths, source)
    return source
