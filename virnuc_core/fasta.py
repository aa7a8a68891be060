"""FASTA intake, output and the frames index.

* :func:`read_fasta` streams records from plain or gzip FASTA (gzip told by its magic bytes) and
  validates as it goes; every problem is a :class:`FastaError` naming the file, the line and the
  record.
* :func:`write_frames` is the index stage: it streams records through chunking and six-frame
  selection (:mod:`virnuc_core.frames`) into ``frames.fa``, ``proteins.faa`` and
  ``frames.index.tsv``; the index holds the byte offset of every sequence line so that a shard
  job reads only its own records (:func:`read_index`, :func:`read_sequences`).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from virnuc_core.files import atomic_writer
from virnuc_core.frames import DEFAULT_BATCH_BASES, iter_frame_batches

# IUPAC nucleotide codes, either case. Gaps ('-'), '*', digits and anything else are errors.
IUPAC = b"ACGTURYSWKMBDHVN"
_IUPAC_BOTH = IUPAC + IUPAC.lower()
_GZIP_MAGIC = b"\x1f\x8b"
INDEX_COLUMNS = ("record", "id", "nt_offset", "nt_length", "aa_offset", "aa_length")


class FastaError(ValueError):
    """A FASTA input that cannot be used; the message names file, line and record."""

    def __init__(self, path: str | os.PathLike, line: int, record: str | None, problem: str):
        self.path, self.line, self.record, self.problem = str(path), line, record, problem
        where = f"record {record!r}" if record is not None else "no record"
        super().__init__(f"{path}: line {line}, {where}: {problem}")

    def __reduce__(self):  # picklable (e.g. across worker processes) with its fields
        return type(self), (self.path, self.line, self.record, self.problem)


@dataclass(frozen=True, slots=True)
class FastaRecord:
    id: str  # first word of the header
    seq: str  # as written (case kept), lines joined
    line: int  # 1-based line number of the header


def _open_binary(path: Path) -> BinaryIO:
    """Open plain or gzip FASTA for reading bytes; gzip is told by its magic bytes."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def read_fasta(path: str | os.PathLike) -> Iterator[FastaRecord]:
    """Stream the records of a plain or gzip FASTA file, validating as it goes.

    Accepted: CRLF line endings, blank lines, upper or lower case, sequences over several lines.
    Errors (:class:`FastaError`): an empty file, a file with no records, text before the first
    header, a header without an id, a record without sequence, a character that is not an IUPAC
    nucleotide code, a duplicate id, unreadable gzip data.
    """
    path = Path(path)
    with _open_binary(path) as handle:
        yield from _parse(handle, path)


def _parse(handle: BinaryIO, path: Path) -> Iterator[FastaRecord]:
    """Yield the records; raise FastaError on the first problem."""
    seen: dict[str, int] = {}
    rid: str | None = None
    head = 0
    parts: list[bytes] = []
    lineno = 0
    empty = True

    def finish() -> FastaRecord:
        if not parts:
            raise FastaError(path, head, rid, "record has no sequence")
        return FastaRecord(rid, b"".join(parts).decode("ascii"), head)

    lines = iter(handle)
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            break
        except (OSError, EOFError, zlib.error) as exc:  # corrupt or truncated gzip
            raise FastaError(path, lineno + 1, rid, f"cannot read the file: {exc}") from exc
        lineno += 1
        empty = False
        line = raw.strip()
        if not line:
            continue
        if line[:1] == b">":
            if rid is not None:
                yield finish()
            words = line[1:].split(None, 1)
            if not words:
                raise FastaError(path, lineno, None, "header has no id ('>' alone)")
            try:
                rid = words[0].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FastaError(path, lineno, None, "header is not valid UTF-8") from exc
            if rid in seen:
                raise FastaError(path, lineno, rid, f"duplicate id (first at line {seen[rid]})")
            seen[rid], head, parts = lineno, lineno, []
        elif rid is None:
            raise FastaError(path, lineno, None, "text before the first header ('>')")
        else:
            bad = line.translate(None, _IUPAC_BOTH)
            if bad:
                char = repr(chr(bad[0])) if 32 <= bad[0] < 127 else f"byte 0x{bad[0]:02x}"
                col = raw.index(bad[:1]) + 1
                raise FastaError(
                    path, lineno, rid, f"{char} at column {col} is not an IUPAC nucleotide code"
                )
            parts.append(line)
    if empty:
        raise FastaError(path, 1, None, "file is empty")
    if rid is None:
        raise FastaError(path, lineno, None, "no FASTA records (no line starting with '>')")
    yield finish()


class FastaWriter:
    """Writes records as ``>id`` and one sequence line to a binary handle, tracking the byte
    offset of every sequence line (and, in ``last_id_bytes``, the UTF-8 size of each id of the
    last call)."""

    def __init__(self, handle: BinaryIO, position: int = 0) -> None:
        self.handle = handle
        self.position = position
        self.last_id_bytes = np.zeros(0, np.int64)

    def write(self, ids: Sequence[str], seqs: Sequence[str]) -> np.ndarray:
        """Write the records; return the byte offsets of their sequence lines."""
        text = "".join([f">{i}\n{s}\n" for i, s in zip(ids, seqs, strict=True)])
        data = text.encode("utf-8")
        nbytes = len if len(data) == len(text) else (lambda x: len(x.encode("utf-8")))
        self.last_id_bytes = np.fromiter(map(nbytes, ids), np.int64, len(ids))
        head = self.last_id_bytes + 2  # ">" id "\n"
        size = head + np.fromiter(map(nbytes, seqs), np.int64, len(seqs)) + 1
        offsets = self.position + np.cumsum(size) - size + head
        self.handle.write(data)
        self.position += len(data)
        return offsets


def write_fasta(path: str | os.PathLike, ids: Sequence[str], seqs: Sequence[str]) -> None:
    """Write a FASTA file (one sequence line per record), atomically."""
    with atomic_writer(path, "wb") as handle:
        FastaWriter(handle).write(ids, seqs)


@dataclass(frozen=True)
class FrameCounts:
    reads: int
    chunks: int
    frames: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def write_frames(
    records: Iterable[FastaRecord],
    chunk_length: int,
    frames_fa: str | os.PathLike,
    proteins_faa: str | os.PathLike,
    index_tsv: str | os.PathLike,
    batch_bases: int = DEFAULT_BATCH_BASES,
) -> FrameCounts:
    """The index stage: chunk + six-frame selection of ``records`` into the three outputs.

    ``frames_fa`` gets the nucleotide string of every kept frame, ``proteins_faa`` its protein
    (same ids, same order), ``index_tsv`` one row per frame (:data:`INDEX_COLUMNS`; offsets are
    those of the sequence lines). All three are written aside and renamed only when the input
    has been read to its end, so on any error (a :class:`FastaError` included) none appears.
    """
    reads = chunks = frames = 0
    with contextlib.ExitStack() as stack:
        nt = FastaWriter(stack.enter_context(atomic_writer(frames_fa, "wb")))
        aa = FastaWriter(stack.enter_context(atomic_writer(proteins_faa, "wb")))
        index = stack.enter_context(atomic_writer(index_tsv, "w"))
        index.write("\t".join(INDEX_COLUMNS) + "\n")
        for batch in iter_frame_batches(records, chunk_length, batch_bases):
            nt_offsets = nt.write(batch.ids, batch.nucleotides).tolist()
            aa_offsets = aa.write(batch.ids, batch.proteins).tolist()
            index.write(
                "".join(
                    [
                        f"{frames + j}\t{i}\t{no}\t{len(n)}\t{ao}\t{len(a)}\n"
                        for j, (i, no, n, ao, a) in enumerate(
                            zip(
                                batch.ids,
                                nt_offsets,
                                batch.nucleotides,
                                aa_offsets,
                                batch.proteins,
                                strict=True,
                            )
                        )
                    ]
                )
            )
            reads += batch.records
            chunks += batch.chunks
            frames += len(batch.ids)
    return FrameCounts(reads=reads, chunks=chunks, frames=frames)


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """The frames index as arrays, one element per frame (``record`` is 0..n-1)."""

    record: np.ndarray
    ids: np.ndarray  # object array of str
    nt_offset: np.ndarray
    nt_length: np.ndarray
    aa_offset: np.ndarray
    aa_length: np.ndarray

    def __len__(self) -> int:
        return self.record.size


def read_index(path: str | os.PathLike) -> FrameIndex:
    """Read ``frames.index.tsv`` written by :func:`write_frames`."""
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if tuple(header) != INDEX_COLUMNS:
            raise ValueError(f"{path}: not a frames index (header {header}, want {INDEX_COLUMNS})")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    if any(len(row) != len(INDEX_COLUMNS) for row in rows):
        bad = next(n for n, row in enumerate(rows, 2) if len(row) != len(INDEX_COLUMNS))
        raise ValueError(f"{path}: line {bad} does not have {len(INDEX_COLUMNS)} columns")
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(INDEX_COLUMNS)

    def ints(col: int) -> np.ndarray:
        return np.array(cols[col], dtype=np.int64)

    index = FrameIndex(ints(0), np.array(cols[1], dtype=object), *map(ints, range(2, 6)))
    if not np.array_equal(index.record, np.arange(len(index))):
        raise ValueError(f"{path}: the record column is not 0, 1, 2, ...")
    return index


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
