"""Parsing a block of FASTA or FASTQ text into reads (see :mod:`virnuc_core.data.reads` for
what is accepted).

Each format has a fast path (whole-block ``bytes`` operations, no Python work per line: the
``*_fast`` functions, None when the block is not plainly well formed) and a line-by-line path
(``_fasta_lines``, ``_fastq_lines``) that defines what is accepted and finds the exact problem;
the fast path gives the same reads on every block it takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from virnuc_core.data.records import (
    _IUPAC_BOTH,
    _IUPAC_NUL,
    InputError,
    _char,
    _check_bases,
    _column,
    _cr_error,
    _crlf_to_lf,
    _header_id,
    _ids,
    _Parsed,
    _word,
)

_QUALITY = bytes(range(33, 127))  # '!' .. '~'


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
