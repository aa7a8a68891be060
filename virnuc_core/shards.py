"""Length-sorted stride split of the frames into shards, and the shard list files."""

from __future__ import annotations

import os

import numpy as np

from virnuc_core.files import atomic_writer


def split_strides(aa_lengths: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Record numbers per shard: sort by protein length (stable), deal out round-robin.

    The record at sorted position i goes to shard ``i mod n_shards``, so every shard gets the
    same mix of lengths (and about the same work); each shard's numbers are returned ascending.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    order = np.argsort(np.asarray(aa_lengths), kind="stable")
    return [np.sort(order[i::n_shards]) for i in range(n_shards)]


def write_shard(path: str | os.PathLike, records: np.ndarray) -> None:
    """Write a shard's record numbers, one per line (atomically)."""
    with atomic_writer(path) as handle:
        handle.write("".join(f"{r}\n" for r in np.asarray(records).tolist()))


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Read a shard file written by :func:`write_shard`."""
    with open(path) as handle:
        return np.array([int(line) for line in handle if line.strip()], dtype=np.int64)
