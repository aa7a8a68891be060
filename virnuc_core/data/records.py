"""What every reader of reads shares: the error type, a read and a batch of reads, and the
line-level checks (ids, IUPAC bases, line ends) that name the exact problem.

The readers: :mod:`virnuc_core.data.reads` (files, blocks, batches), its parsers
:mod:`virnuc_core.data.parsing`, :mod:`virnuc_core.data.long_records` (records read through
disk), :mod:`virnuc_core.data.pairs` (mates in lockstep).
"""

from __future__ import annotations

import lzma
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np

PathLike: TypeAlias = str | os.PathLike


IUPAC = b"ACGTURYSWKMBDHVN"


# Decompressed bytes per read: the few Python calls per block are then noise (2,000 reads of
# 500 bases a block). 256 KiB to 4 MiB measured the same within the noise of the dev machine.
_BLOCK_BYTES = 1 << 20


_IUPAC_BOTH = IUPAC + IUPAC.lower()


_IUPAC_NUL = _IUPAC_BOTH + b"\0"


# An id ends at the first ASCII whitespace (what bytes.split() splits on: these, ' ' and LF).
# Titles with any of these, or starting with a space, take the exact (slower) regex.
_OTHER_SPACE = (b"\t", b"\x0b", b"\x0c", b"\r", b"\n ")


_FIRST_WORD = re.compile(rb"(?m)^[ \t\x0b\x0c\r]*([^ \t\n\x0b\x0c\r]*)")


_DESCRIPTION = re.compile(rb" [^\n]*")


_CR_ONLY = "lines end with CR only (old Mac format): convert to LF"


# What damaged or truncated compressed data raises while it is read.
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


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


def _word(header: bytes) -> str | None:
    """The first word of a header (marker removed), for error messages only."""
    words = header.split(None, 1)
    return words[0].decode("utf-8", "replace") if words else None


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
