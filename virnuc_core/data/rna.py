"""RNA-spelled reads (U for T) read as DNA before chunking (spec §6, "RNA spelling").

The original translated codon by codon through a DNA table, so every codon holding a U was
dropped, stops included: all six frames of an RNA read looked stop-free and were scored as
garbage proteins. Here U/u is read as T/t (RNA viruses are sequenced as cDNA; RefSeq stores them
with T), so the frames of an RNA read are those of its DNA spelling, byte for byte.

A read holding both T and U (either case) is refused: a read is written in one alphabet, so one
with both is damaged or two sequences run together, and no spelling of it is the right one.
Files mixing DNA reads and RNA reads are accepted: each read is unambiguous.

Cost: a batch without U (the usual case) costs one join and two substring scans of its bases;
a batch with U one ``bytes.translate`` of its bases and a check per read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from virnuc_core.data.records import InputError, ReadBatch

log = logging.getLogger("virnuc.index")
U_AS_T = bytes.maketrans(b"Uu", b"Tt")
_U_AS_T_STR = str.maketrans("Uu", "Tt")


@dataclass
class RnaCounts:
    """Reads read as RNA (U as T) in a stream, and per file (paths in stream order)."""

    reads: int = 0
    by_file: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """What frames.counts.json records: reads and files whose U were read as T."""
        return {"rna_reads": self.reads, "rna_files": len(self.by_file)}


def mixed_problem(t: int, u: int) -> str:
    """What is wrong with a read whose first T is base ``t`` and first U base ``u`` (1-based)."""
    return (
        f"the sequence holds both T (first at base {t}) and U (first at base {u}): a read is "
        "DNA (T) or RNA (U), never both: fix or remove this read"
    )


def _refuse_mixed(batch: ReadBatch, k: int) -> None:
    seq = batch.seqs[k]
    t = min(i for i in (seq.find("T"), seq.find("t")) if i >= 0) + 1
    u = min(i for i in (seq.find("U"), seq.find("u")) if i >= 0) + 1
    raise InputError(batch.path, int(batch.lines[k]), batch.ids[k], mixed_problem(t, u))


def _count(counts: RnaCounts, path: str, n: int) -> None:
    if n:
        counts.reads += n
        counts.by_file[path] = counts.by_file.get(path, 0) + n


def _as_dna_each(batch: ReadBatch, counts: RnaCounts) -> ReadBatch:
    """:func:`_as_dna` for a batch holding a long record read through disk, whose U were read
    as T while it was spilled (:mod:`virnuc_core.data.long_records`): read by read."""
    seqs, n = [], 0
    for k, seq in enumerate(batch.seqs):
        if isinstance(seq, str) and ("U" in seq or "u" in seq):
            if "T" in seq or "t" in seq:
                _refuse_mixed(batch, k)
            seq = seq.translate(_U_AS_T_STR)
            n += 1
        elif not isinstance(seq, str) and seq.rna:
            n += 1
        seqs.append(seq)
    _count(counts, batch.path, n)
    return replace(batch, seqs=seqs) if n else batch


def _as_dna(batch: ReadBatch, counts: RnaCounts) -> ReadBatch:
    """The batch with U/u read as T/t (the same batch when it holds no U)."""
    if not all(isinstance(seq, str) for seq in batch.seqs):
        return _as_dna_each(batch, counts)
    joined = "".join(batch.seqs)
    if "U" not in joined and "u" not in joined:
        return batch
    rna = [("U" in s or "u" in s) for s in batch.seqs]
    if "T" in joined or "t" in joined:  # DNA reads beside RNA ones, or a read with both
        for k, seq in enumerate(batch.seqs):
            if rna[k] and ("T" in seq or "t" in seq):
                _refuse_mixed(batch, k)
    dna = joined.encode("ascii").translate(U_AS_T).decode("ascii")
    ends = np.cumsum(batch.lengths).tolist()
    starts = [0, *ends[:-1]]
    seqs = [dna[a:b] for a, b in zip(starts, ends, strict=True)]
    n = sum(rna)
    _count(counts, batch.path, n)
    return replace(batch, seqs=seqs)


def _warn(path: str, n: int) -> None:
    log.warning(
        "%r: %d read(s) written as RNA (U): U read as T, their frames are those of the DNA "
        "spelling (spec: RNA spelling)",
        path,
        n,
    )


def dna_batches(batches: Iterable[ReadBatch], counts: RnaCounts) -> Iterator[ReadBatch]:
    """``batches`` with U/u read as T/t, counted in ``counts``; one warning per file holding
    RNA reads (when the file ends). Raises :class:`InputError` for a read with both T and U."""
    current: str | None = None
    for batch in batches:
        if batch.path != current:
            if current in counts.by_file:
                _warn(current, counts.by_file[current])
            current = batch.path
        yield _as_dna(batch, counts)
    if current in counts.by_file:
        _warn(current, counts.by_file[current])
