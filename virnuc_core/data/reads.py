"""Reading a sample's input reads: FASTA or FASTQ, plain or compressed, one file or several.

* :func:`iter_read_batches` streams the reads of a sample (its files in order, as one stream) in
  batches of about ``batch_bases`` bases, ready for :func:`virnuc_core.data.frames.select_frames`.
* :func:`iter_reads` walks the same reads one by one (id, sequence, file, line).
* :func:`sniff` tells a file's compression and format.

What is read. The format is told by the content, never by the file name: the first character
after an optional UTF-8 byte-order mark and leading blank lines is ``>`` (FASTA) or ``@``
(FASTQ). The compression is told by the magic bytes: plain, gzip (multi-member and BGZF too),
bzip2 or xz, decompressed as a stream with the standard library. A read's id is the first word
of its header (ASCII whitespace ends it; the description is dropped); its sequence is kept as
written (case kept, FASTA lines joined). Qualities are checked, then dropped: nothing downstream
uses them.

Accepted: LF or CRLF line ends, upper or lower case, any IUPAC nucleotide code, spaces and tabs
around a line (as the previous FASTA reader did). FASTA: blank lines anywhere, sequences wrapped
over any number of lines. FASTQ: exactly four lines per record (header, sequence, ``+`` line,
quality), the ``+`` line bare or repeating the header (whole, or just its id); blank lines only
at the end of the file. **Multi-line (wrapped) FASTQ is refused** with its own message: it is
rare, and reading it means taking a quality line that starts with ``@`` or ``+`` for what it
looks like only by counting lengths, so a truncated or damaged 4-line file would be misread
instead of reported.

Long records. A FASTA record whose text passes 8 MiB without ending (a contig, a chromosome) is
read to a temporary file as it streams (:mod:`virnuc_core.data.long_records`): its ``seq`` is then a
``SpilledSeq`` (``len()`` and slices, as ``str``), and memory stays about a block.

Errors are :class:`InputError` (a ``ValueError``) naming the file, the line and the record.
Lines ending in CR alone (old Mac files) are named as such. Every read id must be unique over
the whole sample, across its files; that check ends the stream (see :func:`iter_read_batches`).
A file that changed between its opening and its last byte read (size, modification time, or
the path naming another file: a file still being written, or replaced) raises
:class:`ChangedWhileReadError` at its end, in place of whatever its cut gave: what was read may
be only a part of it. A file whose writer is idle for the whole read cannot be told from a
complete one (FASTA has no end mark); a gzip, bzip2 or xz file cut short is refused anyway.

How it is fast. Files are read in blocks of about 1 MiB and cut at record boundaries. A block of
well-formed records (the common case) is parsed with a few whole-block ``bytes`` operations and
no Python work per line: split into lines (or records), join the sequence lines, check every
character at once with ``bytes.translate(None, allowed)``, decode all ids and all sequences with
one call each; line numbers come from the layout (2 or 4 lines a record) or from lengths in
numpy. A block that fails any of these checks is parsed again line by line (:func:`_fasta_lines`,
:func:`_fastq_lines`): that path defines what is accepted and finds the exact problem, and the
fast path gives the same reads on every block it takes (tested on damaged files).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from virnuc_core.data import read_ids
from virnuc_core.data.frames import DEFAULT_BATCH_BASES
from virnuc_core.data.parsing import (
    _fasta_fast,
    _fasta_lines,
    _fastq_fast,
    _fastq_lines,
    _str_lines,
)
from virnuc_core.data.records import (
    _BLOCK_BYTES,
    ChangedWhileReadError,
    InputError,
    PathLike,
    Read,
    ReadBatch,
    _cr_error,
    _Parsed,
    _read_block,
    _word,
)
from virnuc_core.util.files import describe_change

COMPRESSIONS = ("plain", "gzip", "bzip2", "xz")
FORMATS = ("fasta", "fastq")

_BOM = b"\xef\xbb\xbf"
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_UNSUPPORTED = (
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd -d"),
    (b"\x04\x22\x4d\x18", "lz4", "lz4 -d"),
    (b"PK\x03\x04", "zip", "unzip"),
)
_OPENERS = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
}


# -- opening files -----------------------------------------------------------------------------


def _compression(magic: bytes, path: Path) -> str:
    for prefix, name in _MAGIC:
        if magic.startswith(prefix):
            return name
    for prefix, name, tool in _UNSUPPORTED:
        if magic.startswith(prefix):
            raise InputError(path, 1, None, f"{name}-compressed, not supported: `{tool}` it first")
    return "plain"


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[str, BinaryIO, Callable[[], None]]]:
    """Open a file for reading decompressed bytes; yield (compression, stream, check): call
    ``check()`` once the last byte was read, to raise :class:`ChangedWhileReadError` if the file
    changed since it was opened."""
    with open(path, "rb") as raw:
        opened = os.fstat(raw.fileno())

        def check() -> None:
            change = describe_change(path, raw.fileno(), opened)
            if change is not None:
                raise ChangedWhileReadError(path, change)

        compression = _compression(raw.peek(6)[:6], path)  # peek: pipes work too
        if compression == "plain":
            yield compression, raw, check
        else:
            with _OPENERS[compression](raw) as stream:
                yield compression, stream, check


def _start(stream: BinaryIO, path: Path) -> tuple[str, bytes, int, Exception | None]:
    """Find the first record: return its format, the data from its first byte, its line, and
    the error that stopped the read of that data, if any (raised once that data is parsed)."""
    data, failure = _read_block(stream, _BLOCK_BYTES)
    if not data and failure is None:
        raise InputError(path, 1, None, "file is empty")
    data = data.removeprefix(_BOM)
    lines, ended = 0, True  # line ends before the first record; whether the last one was LF
    while not data.strip():
        lines += data.count(b"\n")
        if failure is not None:
            raise InputError(path, lines + 1, None, f"cannot read the file: {failure}")
        ended = data.endswith(b"\n") if data else ended
        data, failure = _read_block(stream, _BLOCK_BYTES)
        if not data and failure is None:
            last = lines if ended and lines else lines + 1
            raise InputError(path, last, None, "no records (no line starting with '>' or '@')")
    text = data.lstrip()
    line = lines + data.count(b"\n", 0, len(data) - len(text)) + 1
    fmt = {b">": "fasta", b"@": "fastq"}.get(text[:1])
    if fmt is None:
        raise InputError(
            path, line, None, "not FASTA or FASTQ: text before the first header ('>' or '@')"
        )
    begin = data.rfind(b"\n", 0, len(data) - len(text)) + 1
    end = data.find(b"\n", begin)
    first = data[begin : end if end >= 0 else len(data)].rstrip(b"\r")  # the raw first line
    if b"\r" in first.strip():  # the whole file is one line: say why before reading all of it
        raise _cr_error(first, path, line, _word(first.strip()[1:]))
    return fmt, text, line, failure


def sniff(path: PathLike) -> tuple[str, str]:
    """Return ``(compression, format)`` of a file: compression one of :data:`COMPRESSIONS`,
    format ``"fasta"`` or ``"fastq"``, both told from the content. Raises :class:`InputError`
    when the file is empty, holds no record or is neither format."""
    path = Path(path)
    with _open(path) as (compression, stream, _):
        fmt, _, _, _ = _start(stream, path)
    return compression, fmt


# -- shared checks -----------------------------------------------------------------------------


# -- FASTA -------------------------------------------------------------------------------------


# -- FASTQ -------------------------------------------------------------------------------------


# -- one file: blocks cut at record boundaries -------------------------------------------------


class _FileParser:
    """Turns the decompressed bytes of one file into parsed blocks of whole records."""

    def __init__(self, path: Path, fmt: str, line: int) -> None:
        self.path, self.fmt = path, fmt
        self.line = line  # line number of the first byte not parsed yet
        self.last_id: str | None = None

    def cut(self, data: bytes, start: int) -> int:
        """Length of the head of ``data`` worth parsing now (0: read more first). ``data``
        starts at a record; ``start``: no cut point lies before it."""
        if self.fmt == "fasta":  # a '>' starting a line always starts a record
            return data.rfind(b"\n>", start) + 1
        return data.rfind(b"\n", start) + 1  # FASTQ: whole lines; parse() keeps a partial record

    def parse(self, text: bytes, eof: bool) -> tuple[_Parsed, int]:
        """Parse the head of the remaining data; return the reads and the bytes used."""
        if self.fmt == "fasta":
            parsed = _fasta_fast(text, self.line) or _fasta_lines(text, self.path, self.line)
            used = len(text)
            lines_used = parsed.line_ends if parsed.line_ends >= 0 else text.count(b"\n")
        else:
            parsed, lines_used, left = self._fastq(text, eof)
            used = _start_of_last_lines(text, left)
        self.line += lines_used
        if parsed.ids:
            self.last_id = parsed.ids[-1]
        return parsed, used

    def _fastq(self, text: bytes, eof: bool) -> tuple[_Parsed, int, int]:
        """Whole 4-line records from the head of ``text`` (whole lines; at the end of the file
        also the rest, which must be blank lines); return the reads, the lines used and the
        lines left for later (an unfinished record)."""
        lines = _str_lines(text)
        fast = None
        if lines is not None:
            whole = len(lines) // 4 * 4
            fast = _fastq_fast(lines[:whole], self.line) if whole else None
            if fast is not None and (whole == len(lines) or not eof):
                return fast, whole, len(lines) - whole
        raw = text.split(b"\n")  # the line-by-line parser sees the bytes, CRs and all
        if not raw[-1]:
            raw.pop()
        if fast is None:
            parsed, used = _fastq_lines(raw, self.path, self.line, eof, self.last_id)
            return parsed, used, len(raw) - used
        rest, used = _fastq_lines(raw[whole:], self.path, self.line + whole, eof, fast.ids[-1])
        merged = _Parsed(
            fast.ids + rest.ids,
            fast.seqs + rest.seqs,
            np.concatenate([fast.lines, rest.lines]),
            rest.error,
        )
        return merged, whole + used, len(raw) - whole - used

    def long_record(self, data: bytes) -> bool:
        """Whether ``data``, one unfinished record, is long enough to go to disk."""
        from virnuc_core.data.long_records import SPILL_BYTES

        return self.fmt == "fasta" and len(data) >= SPILL_BYTES and b"\n" in data[:SPILL_BYTES]

    def spill(self, data: bytes, stream: BinaryIO) -> tuple[_Parsed, bytes, Exception | None]:
        """The long record starting ``data``, its bases on disk
        (:mod:`virnuc_core.data.long_records`);
        the text after it and the read error after it, if any."""
        from virnuc_core.data.long_records import spill_record

        rid, seq, rest, lines, failure = spill_record(data, stream, self.path, self.line)
        parsed = _Parsed([rid], [seq], np.array([self.line], np.int64))  # type: ignore[list-item]
        self.line += lines
        self.last_id = rid
        return parsed, rest, failure

    def read_error(self, exc: Exception, pending: bytes) -> InputError:
        """The error for data that could not be read after ``pending`` (unparsed, complete)."""
        words = pending[1:].split(None, 1) if pending[:1] in (b">", b"@") else None
        record = words[0].decode("utf-8", "replace") if words else self.last_id
        line = self.line + pending.count(b"\n")
        return InputError(self.path, line, record, f"cannot read the file: {exc}")


def _start_of_last_lines(text: bytes, n: int) -> int:
    """Where the last ``n`` lines of ``text`` (which ends with LF when n > 0) start."""
    pos = len(text)
    for _ in range(n):  # few: at most the lines of an unfinished record
        pos = text.rfind(b"\n", 0, pos - 1) + 1
    return pos


def _parse_file(path: Path) -> Iterator[_Parsed]:
    """The parsed blocks of one file, in order; an error is raised after the reads before it.

    A file that changed while it was read (a file still being written, cut anywhere) raises
    :class:`ChangedWhileReadError` at its end, also in place of the error its cut gave."""
    with _open(path) as (_, stream, check):
        try:
            yield from _parse_stream(stream, path)
        except InputError:
            check()
            raise
        check()


def _parse_stream(stream: BinaryIO, path: Path) -> Iterator[_Parsed]:
    """:func:`_parse_file` on the open file's decompressed bytes."""
    fmt, pending, line, failure = _start(stream, path)
    parser = _FileParser(path, fmt, line)
    while True:
        block = b""
        if failure is None:  # at least as much as is pending: a long record costs O(n)
            block, failure = _read_block(stream, max(_BLOCK_BYTES, len(pending)))
        eof = not block and failure is None
        data = pending + block if block else pending
        end = len(data) if eof else parser.cut(data, max(len(pending) - 1, 0))
        if not end and failure is None and parser.long_record(data):
            end = data.rfind(b"\n>") + 1  # the first block was never searched
            if not end:  # one unfinished record: its bases go to disk
                parsed, pending, failure = parser.spill(data, stream)
                yield parsed
                continue
        pending = data
        if end:
            parsed, used = parser.parse(data if end == len(data) else data[:end], eof)
            pending = data[used:]
            if parsed.ids:
                yield parsed
            if parsed.error is not None:
                raise parsed.error
        if failure is not None:
            raise parser.read_error(failure, pending) from failure
        if eof:
            return


# -- batches and the sample --------------------------------------------------------------------


def _batch_ends(lengths: np.ndarray, batch_bases: int) -> list[int]:
    """Ends of the full batches of reads of these lengths: a batch closes with the read that
    brings it to ``batch_bases``; a read longer than that is a batch of its own."""
    cum = np.cumsum(lengths)
    ends: list[int] = []
    start, base = 0, 0
    while True:
        j = int(np.searchsorted(cum, base + batch_bases))
        if j >= len(cum):
            return ends
        end = j if lengths[j] > batch_bases and j > start else j + 1
        ends.append(end)
        start, base = end, int(cum[end - 1])


def _file_batches(path: Path, batch_bases: int, first: int) -> Iterator[ReadBatch]:
    """The reads of one file in batches; ``first``: the sample-wide number of its first read."""
    ids: list[str] = []
    seqs: list[str] = []
    lines = lengths = np.empty(0, np.int64)
    name = str(path)
    try:
        for parsed in _parse_file(path):
            ids += parsed.ids
            seqs += parsed.seqs
            new = np.fromiter(map(len, parsed.seqs), np.int64, len(parsed.seqs))
            lengths = np.concatenate([lengths, new])
            lines = np.concatenate([lines, parsed.lines])
            start = 0
            for end in _batch_ends(lengths, batch_bases):
                yield ReadBatch(
                    ids[start:end],
                    seqs[start:end],
                    lengths[start:end],
                    lines[start:end],
                    name,
                    first,
                )
                first, start = first + end - start, end
            ids, seqs, lengths, lines = ids[start:], seqs[start:], lengths[start:], lines[start:]
    except InputError:
        if ids:  # the reads before the problem come out first
            yield ReadBatch(ids, seqs, lengths, lines, name, first)
        raise
    if ids:
        yield ReadBatch(ids, seqs, lengths, lines, name, first)


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("no input files")
    return files


def iter_read_batches(
    paths: PathLike | Iterable[PathLike],
    batch_bases: int = DEFAULT_BATCH_BASES,
    *,
    check_duplicates: bool = True,
) -> Iterator[ReadBatch]:
    """Stream the reads of one sample, its files in order, in batches of about ``batch_bases``.

    A batch holds consecutive reads of one file and closes with the read that brings it to
    ``batch_bases`` bases (the last batch of a file can be smaller); a read longer than
    ``batch_bases`` is a batch of its own. ``paths``: the sample's files (a single path is one
    file; a paired sample's stream is :func:`virnuc_core.data.pairs.iter_sample_batches`).
    Problems raise :class:`InputError` after the reads before them were yielded.

    With ``check_duplicates`` every read id must be unique over the sample: ids are remembered
    as 64-bit hashes (8 bytes a read; up to 24 for a moment at the end), sorted when the last
    file ends, and every repeated hash is confirmed by reading the files again to compare the
    real ids. So a duplicate raises only after the last batch: write outputs aside and keep them
    only when the stream ends cleanly. The error names the first read (in sample order) whose
    id an earlier read has, and where that earlier read is.
    """
    if batch_bases < 1:
        raise ValueError(f"batch_bases must be at least 1, got {batch_bases}")
    files = _as_paths(paths)
    batches = read_ids.numbered(lambda path, first: _file_batches(path, batch_bases, first), files)
    if check_duplicates:
        batches = read_ids.unique(
            batches, lambda: iter_read_batches(files, batch_bases, check_duplicates=False)
        )
    yield from batches


def iter_reads(
    paths: PathLike | Iterable[PathLike], *, check_duplicates: bool = True
) -> Iterator[Read]:
    """Stream the reads of one sample one by one: :func:`iter_read_batches`, unbatched."""
    for batch in iter_read_batches(paths, check_duplicates=check_duplicates):
        for rid, seq, line in zip(batch.ids, batch.seqs, batch.lines.tolist(), strict=True):
            yield Read(rid, seq, batch.path, line)


# -- duplicate ids -----------------------------------------------------------------------------
