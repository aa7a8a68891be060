"""FASTA written by the workflow, and its sequence lines read back by byte offset.

The reads users bring are read by :mod:`virnuc_core.data.reads` (FASTA or FASTQ, any compression).
:class:`FastaWriter` writes ``frames.fa`` and ``proteins.faa`` (one sequence line per record) and
returns each sequence line's byte offset; :func:`read_sequences` reads given lines back, so a job
reads only its own records (:mod:`virnuc_core.data.index`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from virnuc_core.util.files import atomic_writer


class FastaWriter:
    """Writes records as ``>id`` and one sequence line to a binary handle, tracking the byte
    offset of every sequence line (and, in ``last_id_bytes`` and ``last_seq_bytes``, the UTF-8
    sizes of the ids and sequences of the last call)."""

    def __init__(self, handle: BinaryIO, position: int = 0) -> None:
        self.handle = handle
        self.position = position
        self.last_id_bytes = self.last_seq_bytes = np.zeros(0, np.int64)

    def write(
        self, ids: Sequence[str], seqs: Sequence[str], id_bytes: np.ndarray | None = None
    ) -> np.ndarray:
        """Write the records; return the byte offsets of their sequence lines. ``id_bytes``:
        the ids' UTF-8 sizes when the caller has them (the same ids in two files)."""
        text = "".join([f">{i}\n{s}\n" for i, s in zip(ids, seqs, strict=True)])
        data = text.encode("utf-8")
        nbytes = len if len(data) == len(text) else (lambda x: len(x.encode("utf-8")))
        if id_bytes is None:
            id_bytes = np.fromiter(map(nbytes, ids), np.int64, len(ids))
        self.last_id_bytes = id_bytes
        self.last_seq_bytes = np.fromiter(map(nbytes, seqs), np.int64, len(seqs))
        head = self.last_id_bytes + 2  # ">" id "\n"
        size = head + self.last_seq_bytes + 1
        offsets = self.position + np.cumsum(size) - size + head
        self.handle.write(data)
        self.position += len(data)
        return offsets


def write_fasta(path: str | os.PathLike, ids: Sequence[str], seqs: Sequence[str]) -> None:
    """Write a FASTA file (one sequence line per record), atomically."""
    with atomic_writer(path, "wb") as handle:
        FastaWriter(handle).write(ids, seqs)


def read_sequences(
    path: str | os.PathLike,
    offsets: Sequence[int] | np.ndarray,
    lengths: Sequence[int] | np.ndarray,
) -> list[str]:
    """Read only the given sequence lines (byte offset and length, from the index)."""
    out = []
    with open(path, "rb", buffering=0) as handle:
        fd = handle.fileno()
        for offset, length in zip(
            np.asarray(offsets).tolist(), np.asarray(lengths).tolist(), strict=True
        ):
            data = os.pread(fd, length + 1, offset)
            if len(data) != length + 1 or data[-1:] != b"\n":
                raise ValueError(f"{path}: no sequence line of {length} bytes at offset {offset}")
            out.append(data[:-1].decode("utf-8"))
    return out
