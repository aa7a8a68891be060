"""Paired-end reads: the two mates of each pair read in lockstep, checked, renamed and
interleaved, so that every later stage sees one stream of reads ``<pair>/1``, ``<pair>/2``, ...

A paired sample's files come as :class:`MateFiles` (a mate-1 file and its mate-2 file) or as
:class:`InterleavedFile` (one file whose records alternate mate 1, mate 2); a sample lists them
in order (:func:`read_sources`). :func:`iter_pair_batches` reads them with
:func:`virnuc_core.data.reads.iter_read_batches` (its speed: whole batches, no Python work per read
in the usual case), cuts the two files' batches to equal read counts and interleaves them.

Mates must match pairwise: the same first word of the header (Casava 1.8 and later:
``@HWI-...:2146 1:N:0:ATCACG`` / ``@HWI-...:2146 2:N:0:ATCACG``) or, in the older style, the
same first word but for a ``/1`` and a ``/2`` at its end. The pair id is that word without the
old suffix; mate 1 becomes the read ``<pair>/1``, mate 2 ``<pair>/2``, in every output. A pair
whose mates do not match, or a mate-1 file and a mate-2 file of different lengths, is refused
(:class:`virnuc_core.data.reads.InputError` naming the file, the line and both ids).

Memory: the lockstep holds one batch of each file; the duplicate-id check over the renamed ids
is that of :mod:`virnuc_core.data.reads` (8 bytes a read).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from virnuc_core.data import read_ids
from virnuc_core.data.frames import DEFAULT_BATCH_BASES
from virnuc_core.data.reads import iter_read_batches
from virnuc_core.data.records import InputError, PathLike, Read, ReadBatch
from virnuc_core.data.samples import INTERLEAVED, PAIRS, SINGLE, Sample

Batches = Iterator[ReadBatch]
EachFile = Callable[[Batches], Batches]  # applied to each file's batches (e.g. RNA as DNA)
_SAME_PAIR = "mate files hold the same pairs in the same order"


@dataclass(frozen=True)
class MateFiles:
    """A mate-1 file and its mate-2 file: record k of one is the mate of record k of the other."""

    r1: str
    r2: str


@dataclass(frozen=True)
class InterleavedFile:
    """One file whose records alternate mate 1, mate 2 of each pair."""

    path: str


def read_sources(files: Sequence[str], layout: str) -> list:
    """A sample's files as read sources: the files themselves (single-end), or
    :class:`MateFiles` / :class:`InterleavedFile` (layouts of :mod:`virnuc_core.data.samples`)."""
    if layout == SINGLE:
        return list(files)
    if layout == PAIRS:
        return [MateFiles(a, b) for a, b in zip(files[0::2], files[1::2], strict=True)]
    if layout == INTERLEAVED:
        return [InterleavedFile(f) for f in files]
    raise ValueError(f"unknown layout {layout!r}: one of {SINGLE}, {PAIRS}, {INTERLEAVED}")


def sample_sources(sample: Sample) -> list:
    """The read sources of a :class:`virnuc_core.data.samples.Sample`."""
    return read_sources(sample.files, sample.layout)


def is_paired(sources: Iterable) -> bool:
    """Whether any of ``sources`` is a pair source (then the stream is one of mates)."""
    return any(isinstance(s, MateFiles | InterleavedFile) for s in sources)


_MATE_SUFFIXES = ("/1", "/2")


def pair_id(id1: str, id2: str) -> str | None:
    """The pair id of mates ``id1`` and ``id2``; None if they are not mates."""
    if id1 == id2:  # the same first word (Casava 1.8), unless it names one mate (a copy)
        return None if id1[-2:] in _MATE_SUFFIXES else id1
    if id1[-2:] == "/1" and id2[-2:] == "/2" and id1[:-2] == id2[:-2]:
        return id1[:-2]
    return None


@dataclass
class _Mates:
    """Reads of one file, the same count as the other mates' (``ids`` ... as in ReadBatch)."""

    ids: list[str]
    seqs: list
    lengths: np.ndarray
    lines: np.ndarray
    path: str


def _pair_ids(one: _Mates, two: _Mates) -> list[str]:
    """The pair ids of mates ``one[k]``, ``two[k]``; raises for the first pair that does not
    match, naming both files, lines and ids."""
    if one.ids == two.ids and not any(i[-2:] in _MATE_SUFFIXES for i in one.ids):
        return one.ids  # Casava 1.8: the usual case, one list comparison (and a suffix scan)
    pairs = [pair_id(a, b) for a, b in zip(one.ids, two.ids, strict=True)]
    if None not in pairs:
        return pairs  # type: ignore[return-value]
    k = pairs.index(None)
    a, b, line1, line2 = one.ids[k], two.ids[k], int(one.lines[k]), int(two.lines[k])
    where1 = f"line {line1}" + ("" if one.path == two.path else f" of {one.path!r}")
    raise InputError(
        two.path,
        line2,
        b,
        f"mate 2 {b!r} does not match mate 1 {a!r} ({where1}): mates share the first word of "
        "the header (or differ only in a final /1 and /2)"
        + ("; both name the same mate: is one file a copy of the other?" if a == b else "")
        + "; "
        + _SAME_PAIR,
    )


def _interleave(one: _Mates, two: _Mates, first: int) -> ReadBatch:
    """One batch: ``<pair>/1``, ``<pair>/2`` for each pair, mate 1 first; ``path`` is the
    mate-1 file (a duplicate pair is met first at its mate 1, which lies there)."""
    pairs = _pair_ids(one, two)
    n = len(pairs)
    ids: list = [None] * (2 * n)
    seqs: list = [None] * (2 * n)
    ids[0::2] = [p + "/1" for p in pairs]
    ids[1::2] = [p + "/2" for p in pairs]
    seqs[0::2], seqs[1::2] = one.seqs, two.seqs
    lengths = np.empty(2 * n, np.int64)
    lines = np.empty(2 * n, np.int64)
    lengths[0::2], lengths[1::2] = one.lengths, two.lengths
    lines[0::2], lines[1::2] = one.lines, two.lines
    return ReadBatch(ids, seqs, lengths, lines, one.path, first)


class _Buffer:
    """The reads of one file not yet paired: refilled a batch at a time."""

    def __init__(self, path: str, batch_bases: int, each_file: EachFile | None) -> None:
        self.path = str(path)
        batches = iter_read_batches([path], batch_bases, check_duplicates=False)
        self.batches = each_file(batches) if each_file else batches
        self.mates = _Mates([], [], np.empty(0, np.int64), np.empty(0, np.int64), self.path)
        self.done = False
        self.taken = 0
        self.last: tuple[str, int] | None = None  # id and line of the last read taken

    def fill(self) -> None:
        """Add the file's next batch (or mark the file ended)."""
        batch = next(self.batches, None)
        if batch is None:
            self.done = True
            return
        m = self.mates
        m.ids = m.ids + batch.ids
        m.seqs = m.seqs + batch.seqs
        m.lengths = np.concatenate([m.lengths, batch.lengths])
        m.lines = np.concatenate([m.lines, batch.lines])

    def take(self, n: int) -> _Mates:
        """The first ``n`` reads not yet paired, removed from the buffer."""
        m = self.mates
        head = _Mates(m.ids[:n], m.seqs[:n], m.lengths[:n], m.lines[:n], self.path)
        self.mates = _Mates(m.ids[n:], m.seqs[n:], m.lengths[n:], m.lines[n:], self.path)
        self.taken += n
        self.last = (head.ids[-1], int(head.lines[-1]))
        return head


def _unequal(longer: _Buffer, shorter: _Buffer) -> InputError:
    rid, line = longer.mates.ids[0], int(longer.mates.lines[0])
    last = f" (its last {shorter.last[0]!r} at line {shorter.last[1]})" if shorter.last else ""
    return InputError(
        longer.path,
        line,
        rid,
        f"{longer.path!r} has more reads than its mate file {shorter.path!r}, which ends after "
        f"{shorter.taken} reads{last}: {_SAME_PAIR} (were they cut or filtered apart?)",
    )


def _mate_file_batches(
    pair: MateFiles, batch_bases: int, first: int, each_file: EachFile | None
) -> Batches:
    """The pairs of a mate-1 and a mate-2 file, read in lockstep, interleaved."""
    one, two = (_Buffer(p, max(1, batch_bases // 2), each_file) for p in (pair.r1, pair.r2))
    while True:
        for side in (one, two):
            if not side.mates.ids and not side.done:
                side.fill()
        n = min(len(one.mates.ids), len(two.mates.ids))
        if n == 0:
            if one.mates.ids or two.mates.ids:
                raise _unequal(*((one, two) if one.mates.ids else (two, one)))
            return
        batch = _interleave(one.take(n), two.take(n), first)
        first += len(batch)
        yield batch


def _split(m: _Mates) -> tuple[_Mates, _Mates]:
    """Records 0, 2, 4 ... and 1, 3, 5 ... of an interleaved run of reads."""
    return tuple(
        _Mates(m.ids[k::2], m.seqs[k::2], m.lengths[k::2], m.lines[k::2], m.path) for k in (0, 1)
    )  # type: ignore[return-value]


def _interleaved_batches(
    source: InterleavedFile, batch_bases: int, first: int, each_file: EachFile | None
) -> Batches:
    """The pairs of one interleaved file, checked and renamed (order kept)."""
    buffer = _Buffer(source.path, batch_bases, each_file)
    while not buffer.done or buffer.mates.ids:
        buffer.fill()
        n = len(buffer.mates.ids)
        if buffer.done and n % 2:
            rid, line = buffer.mates.ids[-1], int(buffer.mates.lines[-1])
            raise InputError(
                buffer.path,
                line,
                rid,
                f"the file ends with a mate 1 without its mate 2 (an odd number of records, "
                f"{buffer.taken + n}): an interleaved file alternates mate 1, mate 2",
            )
        if n >= 2:
            batch = _interleave(*_split(buffer.take(n - n % 2)), first)
            first += len(batch)
            yield batch


def _source_batches(
    source: object, batch_bases: int, first: int, each_file: EachFile | None
) -> Batches:
    if isinstance(source, MateFiles):
        return _mate_file_batches(source, batch_bases, first, each_file)
    if isinstance(source, InterleavedFile):
        return _interleaved_batches(source, batch_bases, first, each_file)
    if isinstance(source, str | os.PathLike):  # a single-end file among pairs
        batches = iter_read_batches([source], batch_bases, check_duplicates=False)
        batches = each_file(batches) if each_file else batches
        return (dataclasses.replace(b, first=first + b.first) for b in batches)
    raise TypeError(f"not a read source: {source!r}")


def iter_pair_batches(
    sources: Sequence,
    batch_bases: int = DEFAULT_BATCH_BASES,
    *,
    check_duplicates: bool = True,
    each_file: EachFile | None = None,
) -> Batches:
    """Stream a paired sample's reads (its ``sources`` in order) as batches of
    :class:`virnuc_core.data.reads.ReadBatch`: mate 1, mate 2 of each pair, renamed ``<pair>/1`` and
    ``<pair>/2``. ``each_file``: applied to each file's own batches before pairing (reads as
    they are in that file: its path, its lines). Ids are unique over the sample as in
    :func:`virnuc_core.data.reads.iter_read_batches` (a repeat raises after the last batch)."""
    if batch_bases < 1:
        raise ValueError(f"batch_bases must be at least 1, got {batch_bases}")
    sources = list(sources)
    batches = read_ids.numbered(
        lambda source, first: _source_batches(source, batch_bases, first, each_file), sources
    )
    if check_duplicates:  # the second pass, if any, reads the pairs again
        batches = read_ids.unique(
            batches, lambda: iter_pair_batches(sources, batch_bases, check_duplicates=False)
        )
    yield from batches


def iter_sample_batches(
    sources: PathLike | Sequence, batch_bases: int = DEFAULT_BATCH_BASES, *,
    check_duplicates: bool = True,
) -> Batches:  # fmt: skip
    """A sample's reads in batches, whatever its layout: :func:`iter_pair_batches` when its
    ``sources`` hold mate files or an interleaved file, else
    :func:`virnuc_core.data.reads.iter_read_batches` over its files."""
    sources = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    if is_paired(sources):
        yield from iter_pair_batches(sources, batch_bases, check_duplicates=check_duplicates)
    else:
        yield from iter_read_batches(sources, batch_bases, check_duplicates=check_duplicates)


def iter_sample_reads(
    sources: PathLike | Sequence, *, check_duplicates: bool = True
) -> Iterator[Read]:
    """A sample's reads one by one (id, sequence, file, line): :func:`iter_sample_batches`,
    unbatched."""
    for batch in iter_sample_batches(sources, check_duplicates=check_duplicates):
        for rid, seq, line in zip(batch.ids, batch.seqs, batch.lines.tolist(), strict=True):
            yield Read(rid, seq, batch.path, line)
