"""Reading a sample's input reads: FASTA or FASTQ, plain or compressed, one file or several.

* :func:`iter_read_batches` streams the reads of a sample (its files in order, as one stream) in
  batches of about ``batch_bases`` bases, ready for :func:`virnuc_core.frames.select_frames`.
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
read to a temporary file as it streams (:mod:`virnuc_core.long_records`): its ``seq`` is then a
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
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np

from virnuc_core.files import describe_change
from virnuc_core.frames import DEFAULT_BATCH_BASES

PathLike: TypeAlias = str | os.PathLike
IUPAC = b"ACGTURYSWKMBDHVN"
COMPRESSIONS = ("plain", "gzip", "bzip2", "xz")
FORMATS = ("fasta", "fastq")

# Decompressed bytes per read: the few Python calls per block are then noise (2,000 reads of
# 500 bases a block). 256 KiB to 4 MiB measured the same within the noise of the dev machine.
_BLOCK_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
_IUPAC_BOTH = IUPAC + IUPAC.lower()
_IUPAC_NUL = _IUPAC_BOTH + b"\0"
_QUALITY = bytes(range(33, 127))  # '!' .. '~'
# An id ends at the first ASCII whitespace (what bytes.split() splits on: these, ' ' and LF).
# Titles with any of these, or starting with a space, take the exact (slower) regex.
_OTHER_SPACE = (b"\t", b"\x0b", b"\x0c", b"\r", b"\n ")
_FIRST_WORD = re.compile(rb"(?m)^[ \t\x0b\x0c\r]*([^ \t\n\x0b\x0c\r]*)")
_DESCRIPTION = re.compile(rb" [^\n]*")
_CR_ONLY = "lines end with CR only (old Mac format): convert to LF"
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
# What damaged or truncated compressed data raises while it is read.
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
# Duplicate-id candidates confirmed per extra pass (only hash collisions need a second one).
_CONFIRM_AT_ONCE = 1024


class InputError(ValueError):
    """An input file that cannot be used; the message names file, line and record."""

    def __init__(self, path: PathLike, line: int, record: str | None, problem: str):
        self.path, self.line, self.record, self.problem = str(path), line, record, problem
        where = f"record {record!r}" if record is not None else "no record"
        super().__init__(f"{path}: line {line}, {where}: {problem}")

    def __reduce__(self):  # picklable (e.g. across worker processes) with its fields
        return type(self), (self.path, self.line, self.record, self.problem)


class ChangedWhileReadError(InputError):
    """A file that changed between its opening and its last byte read (still being written,
    or replaced): what was read may be a part of it, so nothing of it is used."""

    def __init__(self, path: PathLike, change: str):
        self.path, self.line, self.record, self.problem = str(path), 0, None, change
        ValueError.__init__(
            self,
            f"{str(path)!r} changed while it was read ({change}): wait until it is complete "
            "(no program still writing it) and run again",
        )

    def __reduce__(self):
        return type(self), (self.path, self.problem)


@dataclass(frozen=True, slots=True)
class Read:
    """One read: id (first word of the header), sequence as written, file and header line."""

    id: str
    seq: str
    path: str
    line: int


@dataclass(frozen=True, eq=False)
class ReadBatch:
    """Consecutive reads of one file; ``ids`` and ``seqs`` are what ``select_frames`` takes.

    ``lengths`` (int64) are the sequence lengths, ``lines`` (int64) the 1-based line of each
    read's header in ``path``, ``first`` the sample-wide number (0-based) of the first read.
    """

    ids: list[str]
    seqs: list[str]
    lengths: np.ndarray
    lines: np.ndarray
    path: str
    first: int

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Parsed:
    """Reads parsed from one block; ``error``, if set, comes right after them in the file."""

    ids: list[str]
    seqs: list[str]
    lines: np.ndarray
    error: InputError | None = None
    line_ends: int = -1  # LFs in the text parsed, where the parser counted them anyway


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


def _read_block(stream: BinaryIO, size: int) -> tuple[bytes, Exception | None]:
    """About ``size`` bytes (fewer at the end of the file) and the error that stopped the read,
    if any. Read in pieces, so that what was decompressed before damaged data is kept."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < size:
            piece = stream.read1(size - got)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
    except _READ_ERRORS as exc:
        return b"".join(parts), exc
    return (parts[0] if len(parts) == 1 else b"".join(parts)), None


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


def _word(header: bytes) -> str | None:
    """The first word of a header (marker removed), for error messages only."""
    words = header.split(None, 1)
    return words[0].decode("utf-8", "replace") if words else None


def sniff(path: PathLike) -> tuple[str, str]:
    """Return ``(compression, format)`` of a file: compression one of :data:`COMPRESSIONS`,
    format ``"fasta"`` or ``"fastq"``, both told from the content. Raises :class:`InputError`
    when the file is empty, holds no record or is neither format."""
    path = Path(path)
    with _open(path) as (compression, stream, _):
        fmt, _, _, _ = _start(stream, path)
    return compression, fmt


# -- shared checks -----------------------------------------------------------------------------


def _ids(titles: bytes, n: int) -> list[str] | None:
    """The ids of ``n`` header texts joined by LF (markers removed), or None when one has no id
    or its id is not UTF-8 (the line-by-line path then names it)."""
    # `in` tests are memchr scans, much faster than a regex character class
    if any(space in titles for space in _OTHER_SPACE) or titles[:1] == b" ":
        titles = b"\n".join(_FIRST_WORD.findall(titles))
    elif b" " in titles:  # the usual "id description": cut at the first space, 2x faster
        titles = _DESCRIPTION.sub(b"", titles)
    try:
        ids = titles.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    return None if len(ids) != n or "" in ids else ids


def _header_id(line: bytes, path: Path, lineno: int) -> str:
    """The id of a stripped header line; its first byte is the marker."""
    words = line[1:].split(None, 1)
    if not words:
        raise InputError(path, lineno, None, f"header has no id ({line[:1].decode()!r} alone)")
    try:
        return words[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, lineno, None, "header is not valid UTF-8") from exc


def _char(byte: int) -> str:
    return repr(chr(byte)) if 32 <= byte < 127 else f"byte 0x{byte:02x}"


def _column(raw: bytes, byte: bytes) -> int:
    """1-based column of ``byte`` in a raw line, past its leading whitespace."""
    return raw.index(byte, len(raw) - len(raw.lstrip())) + 1


def _cr_error(raw: bytes, path: Path, lineno: int, rid: str | None) -> InputError:
    """A CR inside a line: the file (or this part of it) has old Mac line ends."""
    col = _column(raw, b"\r")
    return InputError(path, lineno, rid, f"a CR without LF at column {col}: {_CR_ONLY}")


def _check_bases(line: bytes, raw: bytes, path: Path, lineno: int, rid: str) -> None:
    """Refuse a character that is not an IUPAC nucleotide code, naming its column."""
    bad = line.translate(None, _IUPAC_BOTH)
    if bad:
        col = _column(raw, bad[:1])
        problem = f"{_char(bad[0])} at column {col} is not an IUPAC nucleotide code"
        raise InputError(path, lineno, rid, problem)


def _crlf_to_lf(text: bytes) -> bytes | None:
    """``text`` with CRLF line ends made LF; None if it holds a CR that ends no line."""
    if b"\r" not in text:
        return text
    if text.count(b"\r") != text.count(b"\r\n"):
        return None
    return text.replace(b"\r\n", b"\n")


# -- FASTA -------------------------------------------------------------------------------------


def _fasta_fast(text: bytes, line: int) -> _Parsed | None:
    """Whole records starting with '>', parsed with whole-block operations; None if anything
    is unusual (then :func:`_fasta_lines` decides)."""
    # Guess the layout from the first record (one sequence line?), so that wrapped files do
    # not pay for a failed attempt at the single-line one on every block.
    second = text.find(b"\n", text.find(b"\n") + 1) + 1  # where the third line starts
    lines = _str_lines(text) if second in (0, len(text)) or text[second] == 62 else None  # '>'
    if lines is not None:
        line_ends = len(lines) - (not text.endswith(b"\n"))
        single = _fasta_single(lines, line, line_ends)
        if single is not None:
            return single
    text = _crlf_to_lf(text)
    return None if text is None else _fasta_wrapped(text, line)


def _str_lines(text: bytes) -> list[str] | None:
    """The lines of a block, decoded with one call (CRLF made LF; the empty piece after the
    last LF dropped); None if it holds a lone CR or is not UTF-8. An LF never occurs inside a
    UTF-8 character, so these are the lines of the bytes."""
    text = _crlf_to_lf(text)
    try:
        lines = None if text is None else text.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _bases_ok(seqs: str) -> bool:
    """Whether ``seqs`` holds IUPAC nucleotide codes only (one translate over its bytes)."""
    try:
        return not seqs.encode("ascii").translate(None, _IUPAC_BOTH)
    except UnicodeEncodeError:
        return False


def _fasta_single(lines: list[str], line: int, line_ends: int) -> _Parsed | None:
    """Records of one sequence line each, the usual layout for reads, or None. The block was
    decoded and split once, so the sequence lines are the very strings handed out."""
    n = len(lines) // 2
    if not n or len(lines) % 2:
        return None
    heads, seqs = "\n".join(lines[0::2]), lines[1::2]
    if heads.count("\n>") != n - 1 or "" in seqs or not _bases_ok("".join(seqs)):
        return None
    ids = _ids(heads[1:].replace("\n>", "\n").encode("utf-8"), n)
    if ids is None:
        return None
    return _Parsed(ids, seqs, line + 2 * np.arange(n), line_ends=line_ends)


def _fasta_wrapped(text: bytes, line: int) -> _Parsed | None:
    """Whole records with sequences over any number of lines (blank lines too), or None.

    The bodies are joined with NULs between them, so that one ``replace`` drops every LF and
    a second makes the NULs the LFs between sequences: no work per record beyond splitting.
    A record's LFs are its body's length before less after."""
    records = text[1:].split(b"\n>")
    parts = [r.partition(b"\n") for r in records]
    bodies = [p[2] for p in parts]
    joined = b"\0".join(bodies).replace(b"\n", b"")
    if joined.translate(None, _IUPAC_NUL):
        return None
    seqs = joined.replace(b"\0", b"\n").decode("ascii").split("\n")
    ids = _ids(b"\n".join([p[0] for p in parts]), len(records))
    if ids is None or len(seqs) != len(records) or "" in seqs:  # (a NUL gives one too many)
        return None
    before = np.fromiter(map(len, bodies), np.int64, len(bodies))
    spans = 2 + before - np.fromiter(map(len, seqs), np.int64, len(seqs))  # lines a record
    ends = np.cumsum(spans)
    return _Parsed(ids, seqs, line + ends - spans, line_ends=int(ends[-1]) - 1)


def _fasta_lines(text: bytes, path: Path, line: int) -> _Parsed:
    """Whole records parsed line by line: the reference for what is accepted; stops at the
    first problem, returning the reads before it and the error."""
    ids: list[str] = []
    seqs: list[str] = []
    heads: list[int] = []
    rid, head, parts = None, 0, []

    def finish() -> None:
        if not parts:
            raise InputError(path, head, rid, "record has no sequence")
        ids.append(rid)
        seqs.append(b"".join(parts).decode("ascii"))
        heads.append(head)

    try:
        for lineno, raw in enumerate(text.split(b"\n"), line):
            stripped = raw.strip()
            if not stripped:
                continue
            if stripped[:1] == b">":
                if rid is not None:  # the record before is whole: its problems come first
                    finish()
                if b"\r" in stripped:
                    raise _cr_error(raw, path, lineno, _word(stripped[1:]))
                rid, head, parts = _header_id(stripped, path, lineno), lineno, []
            elif rid is None:
                raise InputError(path, lineno, None, "text before the first header ('>')")
            else:
                if b"\r" in stripped:
                    raise _cr_error(raw, path, lineno, rid)
                _check_bases(stripped, raw, path, lineno, rid)
                parts.append(stripped)
        if rid is not None:
            finish()
    except InputError as err:
        return _Parsed(ids, seqs, np.array(heads, np.int64), err)
    return _Parsed(ids, seqs, np.array(heads, np.int64))


# -- FASTQ -------------------------------------------------------------------------------------


def _fastq_fast(lines: list[str], line: int) -> _Parsed | None:
    """4n decoded lines of whole 4-line records, parsed with whole-block operations; None if
    anything is unusual (then :func:`_fastq_lines` decides)."""
    n = len(lines) // 4
    heads = "\n".join(lines[0::4])
    seqs, qual_lines = lines[1::4], lines[3::4]
    if heads[:1] != "@" or heads.count("\n@") != n - 1 or "" in seqs:
        return None
    if list(map(len, seqs)) != list(map(len, qual_lines)) or not _bases_ok("".join(seqs)):
        return None
    try:  # a range: numpy min/max, 10x the speed of a translate
        quals = np.frombuffer("".join(qual_lines).encode("ascii"), np.uint8)
    except UnicodeEncodeError:
        return None
    if quals.min() < _QUALITY[0] or quals.max() > _QUALITY[-1]:
        return None
    titles = heads[1:].replace("\n@", "\n")
    plus = lines[2::4]
    # bare '+' lines (usual), or every one repeating its header whole (old SRA dumps)
    if plus.count("+") != n:
        repeats = "\n".join(plus)
        if repeats[:1] != "+" or repeats[1:].replace("\n+", "\n") != titles:
            return None
    ids = _ids(titles.encode("utf-8"), n)
    return None if ids is None else _Parsed(ids, seqs, line + 4 * np.arange(n))


def _fastq_record(
    four: Sequence[bytes], path: Path, line: int, previous: str | None
) -> tuple[str, bytes]:
    """Check one 4-line record (raw lines); return its id and sequence."""
    head, seq, plus, qual = stripped = [x.strip() for x in four]
    if b"\r" in b"".join(stripped):
        k = next(k for k, x in enumerate(stripped) if b"\r" in x)
        raise _cr_error(four[k], path, line + k, _word(head[1:]) if head[:1] == b"@" else None)
    if head[:1] != b"@":
        after = f" (after record {previous!r})" if previous is not None else ""
        got = "a blank line" if not head else repr(head[:40])[1:]
        raise InputError(
            path, line, None, f"expected a header line starting with '@'{after}, found {got}"
        )
    rid = _header_id(head, path, line)
    if not seq:
        raise InputError(path, line + 1, rid, "record has no sequence")
    _check_bases(seq, four[1], path, line + 1, rid)
    if plus[:1] != b"+":
        raise InputError(path, line + 2, rid, _missing_plus(plus))
    repeat = plus[1:].strip()
    if repeat and repeat != head[1:].strip() and repeat != rid.encode():
        problem = f"the '+' line repeats {repeat.decode('utf-8', 'replace')!r}, not this header"
        raise InputError(path, line + 2, rid, problem)
    if len(qual) != len(seq):
        problem = f"quality line has {len(qual)} characters, the sequence {len(seq)}"
        raise InputError(path, line + 3, rid, problem)
    bad = qual.translate(None, _QUALITY)
    if bad:
        col = _column(four[3], bad[:1])
        raise InputError(
            path,
            line + 3,
            rid,
            f"{_char(bad[0])} at column {col} is not a quality character ('!' to '~')",
        )
    return rid, seq


def _missing_plus(found: bytes) -> str:
    if found and not found.translate(None, _IUPAC_BOTH):
        return (
            "missing the '+' line: the sequence goes on here, and multi-line (wrapped) FASTQ is "
            "not supported: rewrite it with one sequence line per record (e.g. seqtk seq)"
        )
    return f"missing the '+' line (found {repr(found[:40])[1:] if found else 'a blank line'})"


def _fastq_lines(
    lines: list[bytes], path: Path, line: int, eof: bool, previous: str | None
) -> tuple[_Parsed, int]:
    """Records parsed line by line (the reference for what is accepted): return the reads (and
    the first problem) and how many lines they used; an unfinished record is left unless
    ``eof``."""
    ids: list[str] = []
    seqs: list[str] = []
    heads: list[int] = []
    i, error = 0, None
    try:
        while i < len(lines):
            if not lines[i].strip():  # blank lines: fine at the end of the file only
                rest = next((j for j in range(i, len(lines)) if lines[j].strip()), None)
                if rest is None:
                    i = len(lines) if eof else i
                    break
                last = f" after record {previous!r}" if previous is not None else ""
                problem = f"blank line{last} (FASTQ allows them only at the end of the file)"
                raise InputError(path, line + i, None, problem)
            if len(lines) - i < 4:
                if eof:
                    problem = f"the file ends inside this record ({len(lines) - i} of 4 lines)"
                    raise InputError(path, line + i, _word(lines[i].strip()[1:]), problem)
                break
            rid, seq = _fastq_record(lines[i : i + 4], path, line + i, previous)
            ids.append(rid)
            seqs.append(seq.decode("ascii"))
            heads.append(line + i)
            previous, i = rid, i + 4
    except InputError as err:
        error = err
    return _Parsed(ids, seqs, np.array(heads, np.int64), error), i


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
        from virnuc_core.long_records import SPILL_BYTES

        return self.fmt == "fasta" and len(data) >= SPILL_BYTES and b"\n" in data[:SPILL_BYTES]

    def spill(self, data: bytes, stream: BinaryIO) -> tuple[_Parsed, bytes, Exception | None]:
        """The long record starting ``data``, its bases on disk (:mod:`virnuc_core.long_records`);
        the text after it and the read error after it, if any."""
        from virnuc_core.long_records import spill_record

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
    file; :class:`virnuc_core.pairs.MateFiles` or ``InterleavedFile`` among them make it the
    stream of a paired sample, :func:`virnuc_core.pairs.iter_pair_batches`). Problems raise
    :class:`InputError` after the reads before them were yielded.

    With ``check_duplicates`` every read id must be unique over the sample: ids are remembered
    as 64-bit hashes (8 bytes a read; up to 24 for a moment at the end), sorted when the last
    file ends, and every repeated hash is confirmed by reading the files again to compare the
    real ids. So a duplicate raises only after the last batch: write outputs aside and keep them
    only when the stream ends cleanly. The error names the first read (in sample order) whose
    id an earlier read has, and where that earlier read is.
    """
    if batch_bases < 1:
        raise ValueError(f"batch_bases must be at least 1, got {batch_bases}")
    if not isinstance(paths, str | os.PathLike):
        paths = list(paths)
        if any(not isinstance(p, str | os.PathLike) for p in paths):  # mate pairs among them
            from virnuc_core.pairs import iter_pair_batches

            yield from iter_pair_batches(paths, batch_bases, check_duplicates=check_duplicates)
            return
    files = _as_paths(paths)
    hashes = _IdHashes() if check_duplicates else None
    first = 0
    for path in files:
        for batch in _file_batches(path, batch_bases, first):
            if hashes is not None:
                hashes.add(batch.ids)
            first += len(batch)
            yield batch
    if hashes is not None:
        _check_duplicates(files, hashes.array())


def iter_reads(
    paths: PathLike | Iterable[PathLike], *, check_duplicates: bool = True
) -> Iterator[Read]:
    """Stream the reads of one sample one by one: :func:`iter_read_batches`, unbatched."""
    for batch in iter_read_batches(paths, check_duplicates=check_duplicates):
        for rid, seq, line in zip(batch.ids, batch.seqs, batch.lines.tolist(), strict=True):
            yield Read(rid, seq, batch.path, line)


# -- duplicate ids -----------------------------------------------------------------------------


class _IdHashes:
    """The 64-bit hashes of every id seen, in read order, in compact arrays.

    Python's ``hash`` of a str (SipHash, salted per process) is fine here: both passes over the
    files run in this process, and a collision only costs a comparison of the real ids.
    """

    _SPILL = 1 << 20  # small per-batch arrays are merged into blocks of about this many

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._small: list[np.ndarray] = []
        self._count = 0

    def add(self, ids: list[str]) -> None:
        self._small.append(np.fromiter(map(hash, ids), np.int64, len(ids)))
        self._count += len(ids)
        if self._count >= self._SPILL:
            self._blocks.append(np.concatenate(self._small))
            self._small, self._count = [], 0

    def array(self) -> np.ndarray:
        parts, self._blocks, self._small = self._blocks + self._small, [], []
        return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _check_duplicates(files: list[Path], hashes: np.ndarray) -> None:
    """Raise for the first read whose id an earlier read has; ``hashes``: one per read."""
    if hashes.size < 2:
        return
    ordered = np.sort(hashes)
    if not (ordered[1:] == ordered[:-1]).any():  # the usual case: done, no second pass
        return
    del ordered
    order = np.argsort(hashes, kind="stable")  # equal hashes stay in read order
    ordered = hashes[order]
    del hashes
    same = ordered[1:] == ordered[:-1]
    del ordered
    repeats = np.flatnonzero(same) + 1  # sorted positions whose hash the previous one has
    run_starts = np.flatnonzero(np.concatenate([[True], ~same]))
    starts = run_starts[np.searchsorted(run_starts, repeats, side="right") - 1]
    by_read = np.argsort(order[repeats], kind="stable")  # repeats in read order
    for k in range(0, by_read.size, _CONFIRM_AT_ONCE):
        pick = by_read[k : k + _CONFIRM_AT_ONCE]
        _confirm(files, order, repeats[pick], starts[pick])


def _confirm(files: list[Path], order: np.ndarray, repeats: np.ndarray, starts: np.ndarray) -> None:
    """Compare the real ids of these repeated hashes (in read order) with the earlier reads of
    the same hash; raise for the first true duplicate."""
    upto: dict[int, int] = {}  # run start -> its last repeat to confirm
    for j, s in zip(repeats.tolist(), starts.tolist(), strict=True):
        upto[s] = max(upto.get(s, s), j)
    wanted = np.unique(np.concatenate([order[s : j + 1] for s, j in upto.items()]))
    found = _locate(files, wanted)
    for j, s in zip(repeats.tolist(), starts.tolist(), strict=True):
        rid, path, line = found[int(order[j])]
        for earlier in order[s:j].tolist():  # same hash, earlier in the sample
            first_id, first_path, first_line = found[earlier]
            if first_id == rid:
                where = f"line {first_line}" + ("" if first_path == path else f" of {first_path}")
                raise InputError(path, line, rid, f"duplicate id (first at {where})")


def _locate(files: list[Path], wanted: np.ndarray) -> dict[int, tuple[str, str, int]]:
    """Id, file and line of the reads with these sample-wide numbers (sorted), read again."""
    found: dict[int, tuple[str, str, int]] = {}
    for batch in iter_read_batches(files, check_duplicates=False):
        lo, hi = np.searchsorted(wanted, [batch.first, batch.first + len(batch)])
        for number in wanted[lo:hi].tolist():
            k = number - batch.first
            found[number] = (batch.ids[k], batch.path, int(batch.lines[k]))
        if batch.first + len(batch) > wanted[-1]:
            break
    return found
