"""Length-sorted stride split of the frames into shards, and the shard list files.

A shard file lists record numbers, one per line, ascending. With duplicate removal it is a TSV
whose header is ``record`` then one column per model: the record whose embedding each record
shares for that model (itself for a distinct sequence). All records linked by either model's
copies sit in one shard, so every job can copy rows within its own shard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from virnuc_core.files import atomic_writer


def split_strides(
    aa_lengths: np.ndarray, n_shards: int, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """Record numbers per shard: sort by protein length (stable), deal out round-robin.

    The record at sorted position i goes to shard ``i mod n_shards``, so every shard gets the
    same mix of lengths (and about the same work); each shard's numbers are returned ascending.
    ``groups`` (each record's group label, the group's smallest record: see
    :func:`virnuc_core.dedupe.shared_groups`) deals only those and sends every other record to
    its group's shard: the distinct work is what is balanced.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    lengths = np.asarray(aa_lengths)
    groups = np.arange(lengths.size) if groups is None else np.asarray(groups, np.int64)
    firsts = np.flatnonzero(groups == np.arange(lengths.size))
    shard_of = np.empty(lengths.size, dtype=np.int64)
    shard_of[firsts[np.argsort(lengths[firsts], kind="stable")]] = np.arange(firsts.size) % n_shards
    shard_of = shard_of[groups]
    return [np.flatnonzero(shard_of == i) for i in range(n_shards)]


def write_shard(
    path: str | os.PathLike, records: np.ndarray, sources: Mapping[str, np.ndarray] | None = None
) -> None:
    """Write a shard's record numbers (atomically), with per-model ``sources`` columns if given."""
    cols = [np.asarray(records).tolist()] + [
        np.asarray(v).tolist() for v in (sources or {}).values()
    ]
    with atomic_writer(path) as handle:
        if sources:
            handle.write("\t".join(["record", *sources]) + "\n")
        handle.write("".join("\t".join(map(str, row)) + "\n" for row in zip(*cols, strict=True)))


def read_shard(path: str | os.PathLike, model: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(records, sources) of a shard file: for ``model``'s column if the file has one, else every
    record is its own source."""
    with open(path) as handle:
        lines = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    header = lines.pop(0) if lines and lines[0][0] == "record" else ["record"]
    table = np.array(lines, dtype=np.int64).reshape(len(lines), len(header))
    records = table[:, 0]
    if model is None or model not in header:
        return records, records.copy()
    sources = table[:, header.index(model)]
    if not np.isin(sources, records).all():
        raise ValueError(f"{path}: a {model} source record is not in the shard")
    return records, sources
