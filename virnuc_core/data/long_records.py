"""FASTA records too long to hold in memory (contigs, chromosomes): their bases go to a
temporary file while the record streams by, in pieces of about a block.

Where a record is cut into chunks depends on its whole length (spec §1: the overlap is spread
over all its chunks), so nothing can be chunked before the record has ended. Holding a
300-megabase chromosome as text cost the index stage about three times its size (the block being
parsed, its lines joined, the decoded string). Here, once one record's text passes
:data:`SPILL_BYTES` without ending, :func:`spill_record` checks its sequence lines piece by piece
(the same rules and messages as the line-by-line reader of :mod:`virnuc_core.data.reads`) and writes
the bases to an unnamed temporary file (``$TMPDIR``); the record comes out as a
:class:`SpilledSeq`, which has a length and gives any slice as ``str``, read from that file.
Memory stays about a block whatever the record's length; the disk holds the record's bases until
the read is dropped.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from virnuc_core.data import records
from virnuc_core.data.rna import U_AS_T, mixed_problem

# One record's text past this without ending goes to disk (reads.py's blocks are 1 MiB).
SPILL_BYTES = 8 << 20
_UNUSUAL = (b"\r", b" ", b"\t", b"\x0b", b"\x0c")  # take the line-by-line check


class SpilledSeq:
    """The bases of one long record, on disk: ``len()`` and slices (``str``) like a string."""

    __slots__ = ("_file", "_length", "rna")

    def __init__(self, file: BinaryIO, length: int, rna: bool = False) -> None:
        self._file, self._length = file, length
        self.rna = rna  # written with U, read as T while it was spilled (virnuc_core.data.rna)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key: slice) -> str:
        if not isinstance(key, slice):
            raise TypeError("a spilled sequence gives slices only")
        start, stop, step = key.indices(self._length)
        if stop <= start:
            return ""
        data = os.pread(self._file.fileno(), stop - start, start)
        return data[::step].decode("ascii") if step != 1 else data.decode("ascii")

    def __str__(self) -> str:  # the whole sequence: for small tests only
        return self[:]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return len(other) == self._length and str(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _body_lines(region: bytes, path: Path, line: int, rid: str) -> tuple[bytes, int | None]:
    """The bases of whole body lines (``region`` ends with LF or is the file's end), checked
    line by line as :func:`virnuc_core.data.reads._fasta_lines` does; and where a header starting
    with whitespace begins, if one does (the record ends there)."""
    parts: list[bytes] = []
    pos = 0
    for lineno, raw in enumerate(region.split(b"\n"), line):
        stripped = raw.strip()
        if stripped[:1] == b">":  # the text after the record starts at its '>'
            return b"".join(parts), pos + len(raw) - len(raw.lstrip())
        if stripped:
            if b"\r" in stripped:
                raise records._cr_error(raw, path, lineno, rid)
            records._check_bases(stripped, raw, path, lineno, rid)
            parts.append(stripped)
        pos += len(raw) + 1
    return b"".join(parts), None


def _bases(region: bytes, path: Path, line: int, rid: str) -> tuple[bytes, int | None]:
    """The bases of body lines: whole-piece operations when the lines hold bases only."""
    if not any(c in region for c in _UNUSUAL):
        bases = region.replace(b"\n", b"")
        if not bases.translate(None, records._IUPAC_BOTH):
            return bases, None
    return _body_lines(region, path, line, rid)


def _first(bases: bytes, letters: bytes, offset: int, found: int | None) -> int | None:
    """The 1-based position of the record's first of ``letters`` (``found`` if known already;
    ``bases`` starts at base ``offset`` + 1)."""
    if found is not None:
        return found
    hits = [i for i in (bases.find(letters[:1]), bases.find(letters[1:])) if i >= 0]
    return offset + min(hits) + 1 if hits else None


def _header(data: bytes, path: Path, line: int) -> tuple[str, int]:
    """The id of the header line that starts ``data``, and where its body starts."""
    end = data.index(b"\n") + 1
    raw = data[: end - 1]
    stripped = raw.strip()
    if b"\r" in stripped:
        raise records._cr_error(raw, path, line, records._word(stripped[1:]))
    return records._header_id(stripped, path, line), end


def spill_record(
    data: bytes, stream: BinaryIO, path: Path, line: int
) -> tuple[str, SpilledSeq, bytes, int, Exception | None]:
    """Stream one FASTA record to disk. ``data``: the unparsed text from its header on (one
    unfinished record, with its whole header line); ``line``: the header's line number.

    Returns its id, its bases, the text after it (from the next header on), the lines it used,
    and the error that stopped reading the stream after the record's end, if any (the caller
    reports it once the text after the record is parsed). A read error inside the record is
    raised here, as :class:`virnuc_core.data.reads.InputError` naming the record and the line.
    """
    rid, start = _header(data, path, line)
    spill = tempfile.TemporaryFile(prefix="virnuc-record-")  # noqa: SIM115 (kept by the read)
    length, lines, tail, failure = 0, 1, data[start:], None
    first_t = first_u = None  # 1-based: RNA (U) is read as T, a read with both is refused
    while True:
        block = b""
        if failure is None:
            block, failure = records._read_block(stream, records._BLOCK_BYTES)
        eof = not block and failure is None
        text = tail + block
        cut = len(text) if eof else text.rfind(b"\n") + 1
        region, tail = text[:cut], text[cut:]
        bases, end = _bases(region, path, line + lines, rid)
        first_t, first_u = (
            _first(bases, b"Tt", length, first_t),
            _first(bases, b"Uu", length, first_u),
        )
        if first_u is not None:
            if first_t is not None:
                spill.close()
                raise records.InputError(path, line, rid, mixed_problem(first_t, first_u))
            bases = bases.translate(U_AS_T)
        spill.write(bases)
        length += len(bases)
        lines += region.count(b"\n", 0, len(region) if end is None else end)
        if end is not None:
            rest = region[end:] + tail
            break
        if eof:
            rest = b""
            break
        if failure is not None and not block:
            spill.close()
            problem = f"cannot read the file: {failure}"
            raise records.InputError(path, line + lines, rid, problem) from failure
    if not length:
        spill.close()
        raise records.InputError(path, line, rid, "record has no sequence")
    spill.flush()
    return rid, SpilledSeq(spill, length, rna=first_u is not None), rest, lines, failure
