"""The index stage's outputs and the frames index every later stage reads.

:func:`write_index` streams frame batches (:mod:`virnuc_core.data.frames`) into ``frames.fa``,
``proteins.faa`` and the binary ``frames.index.npy``: one
row of :data:`INDEX_DTYPE` per kept frame (where its read and chunk are, where its sequences and
id lie in the two FASTA files). Later stages map the binary index (:func:`open_index`) and touch
only the rows they need: an embed job its shard's, predict a block at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from virnuc_core.data.frames import FrameBatch, frame_batches
from virnuc_core.data.pairs import is_paired, iter_pair_batches, sample_sources
from virnuc_core.data.reads import iter_read_batches
from virnuc_core.data.rna import RnaCounts, dna_batches
from virnuc_core.data.samples import Sample
from virnuc_core.util.fasta import FastaWriter
from virnuc_core.util.files import atomic_writer
from virnuc_core.util.npyfile import NpyAppender, NpyReader

log = logging.getLogger("virnuc.index")

# Packed (no alignment padding): 41 bytes a frame. Offsets are those of the sequence lines; the
# frame's id is the id_length bytes before its sequence line in frames.fa, after '>'.
INDEX_DTYPE = np.dtype(
    [
        ("read", "<i8"),  # the read's number in the sample (every read counted)
        ("chunk", "<i4"),  # the chunk's 0-based number in its read
        ("frame", "u1"),  # 0..5: F1, F2, F3, R1, R2, R3
        ("id_length", "<i4"),  # bytes of the frame id (UTF-8)
        ("nt_offset", "<i8"),
        ("nt_length", "<i4"),
        ("aa_offset", "<i8"),
        ("aa_length", "<i4"),
    ]
)


@dataclass(frozen=True)
class FrameCounts:
    reads: int
    chunks: int
    frames: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _index_rows(batch: FrameBatch, nt: FastaWriter, aa: FastaWriter, nt_offsets, aa_offsets):
    """The batch's index rows; the writers' last call gave the byte sizes (ASCII sequences)."""
    rows = np.empty(len(batch.ids), INDEX_DTYPE)
    rows["read"], rows["chunk"], rows["frame"] = batch.read, batch.chunk, batch.frame
    rows["id_length"] = nt.last_id_bytes
    rows["nt_offset"], rows["aa_offset"] = nt_offsets, aa_offsets
    rows["nt_length"], rows["aa_length"] = nt.last_seq_bytes, aa.last_seq_bytes
    return rows


def write_index(
    batches: Iterable[FrameBatch],
    frames_fa: str | os.PathLike,
    proteins_faa: str | os.PathLike,
    index_npy: str | os.PathLike,
) -> FrameCounts:
    """The index stage: write the frames of ``batches`` into the four outputs.

    ``frames_fa`` gets the nucleotide string of every kept frame, ``proteins_faa`` its protein
    (same ids, same order) and ``index_npy`` one :data:`INDEX_DTYPE` row per frame. All three
    are written aside and renamed only when ``batches`` has ended, so on any error none
    appears.
    """
    reads = chunks = frames = 0
    with contextlib.ExitStack() as stack:
        nt = FastaWriter(stack.enter_context(atomic_writer(frames_fa, "wb")))
        aa = FastaWriter(stack.enter_context(atomic_writer(proteins_faa, "wb")))
        npy = NpyAppender(stack.enter_context(atomic_writer(index_npy, "wb")), INDEX_DTYPE)
        for batch in batches:
            nt_offsets = nt.write(batch.ids, batch.nucleotides)
            aa_offsets = aa.write(batch.ids, batch.proteins, nt.last_id_bytes)
            rows = _index_rows(batch, nt, aa, nt_offsets, aa_offsets)
            npy.append(rows)
            reads += batch.records
            chunks += batch.chunks
            frames += len(batch.ids)
        npy.close()
    return FrameCounts(reads=reads, chunks=chunks, frames=frames)


def open_index(path: str | os.PathLike) -> NpyReader:
    """The binary frames index (:data:`INDEX_DTYPE` rows), read a range or a column at a time."""
    return NpyReader(path, INDEX_DTYPE)


def sequence_spans(rows: np.ndarray, columns: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Byte offsets and lengths of a model's sequences for index ``rows``: ``columns`` names
    the offset and length columns (a family's ``columns``, :mod:`virnuc_core.registry`)."""
    off, length = columns
    return rows[off].astype(np.int64), rows[length].astype(np.int64)


def read_ids(frames_fa: str | os.PathLike, index: NpyReader, lo: int, hi: int) -> list[str]:
    """The frame ids of records ``lo .. hi-1``: one read of the span of frames.fa they lie in."""
    if hi <= lo:
        return []
    rows = index.read(lo, hi)
    start = int(rows["nt_offset"][0]) - int(rows["id_length"][0]) - 2  # '>' id '\n'
    end = int(rows["nt_offset"][-1])
    with open(frames_fa, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    lines = data.split(b"\n")[0:-1:2]  # header lines; each sequence line follows its header
    if len(lines) != hi - lo or any(line[:1] != b">" for line in lines):
        raise ValueError(f"{frames_fa}: records {lo}..{hi - 1} are not where the index says")
    return [line[1:].decode("utf-8") for line in lines]


def index_sample(
    read_files: list | Sample, chunk_length: int, outputs: dict[str, str]
) -> FrameCounts:
    """The index stage for one sample: its read files (FASTA or FASTQ, any compression; read as
    one sample, in order, ids unique over all of them) into ``outputs`` (``frames``,
    ``proteins``, ``index``, ``counts``). Reads written as RNA are read as DNA (U as T,
    :mod:`virnuc_core.data.rna`); ``counts`` also records how many reads and files were.

    ``read_files``: the sample (:class:`virnuc_core.data.samples.Sample`) or its read sources, file
    paths or mate pairs (:mod:`virnuc_core.data.pairs`): a paired sample's frames are those of mate
    1, mate 2, mate 1, mate 2 ... in input order, reads named ``<pair>/1`` and ``<pair>/2``."""
    sources = sample_sources(read_files) if isinstance(read_files, Sample) else list(read_files)
    rna = RnaCounts()
    if is_paired(sources):
        reads = iter_pair_batches(sources, each_file=lambda batches: dna_batches(batches, rna))
    else:
        reads = dna_batches(iter_read_batches(sources), rna)
    counts = write_index(
        frame_batches(reads, chunk_length),
        outputs["frames"],
        outputs["proteins"],
        outputs["index"],
    )
    recorded = counts.as_dict() | rna.as_dict()
    with atomic_writer(outputs["counts"]) as out:
        json.dump(recorded, out, indent=2)
    log.info("%s", recorded)
    return counts
