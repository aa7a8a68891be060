"""What a user reads after a run: per-read verdicts and the viral reads.

Per-read summary
----------------
:func:`summarize_reads` walks the input FASTA, ``prediction_results.tsv`` and the frames index
``frames.index.npy`` in lockstep. Prediction row i is the frame of index row i (features and
predictions keep the index order), so it belongs to read number ``read[i]`` (every input read
counted, in input order) and to its chunk ``chunk[i] + 1``: frames are joined to reads through
these integers, never by parsing chunk ids (a read id may itself hold ``_chunk_``). Each row's id
is still checked against them (``<read id>_chunk_<k>`` and the 2-letter frame label, spec §4), so
predictions made from other reads are refused. A read of ``n`` bases has
:func:`virnuc_core.data.frames.chunks_of` chunks (spec §1). A read with no kept frame has 0 viral
chunks and the score ``NA``: the classifier never saw it, so there is no score to report.

The rule's whole step (tables, FASTA, the run summary page) is
:func:`virnuc_core.report.run_summary.summarize_sample`; the report's figures are
:mod:`virnuc_core.report.figures`.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from virnuc_core.data.frames import chunks_of
from virnuc_core.data.index import open_index
from virnuc_core.data.pairs import iter_sample_reads
from virnuc_core.data.records import Read
from virnuc_core.report.regions import RegionWriter
from virnuc_core.util.files import atomic_writer

SUMMARY_COLUMNS = (
    "read_id", "length", "chunks", "frames", "viral_chunks", "viral", "max_virus_score",
    "viral_fraction",  # appended last: parsers of the earlier columns keep working
)  # fmt: skip
PREDICTION_COLUMNS = ("Sequence_ID", "Prediction", "score1", "score2")
HIGHEST_COLUMNS = ("Modified_ID", "Is_Virus")
NA = "NA"
FASTA_WIDTH = 60
log = logging.getLogger("virnuc.summary")
RERUN_HINT = "rerun with `snakemake --forcerun index_fasta` (or delete the sample's results/)"
INDEX_BLOCK = 1 << 16  # index rows read at a time beside the prediction rows


class SummaryError(ValueError):
    """The prediction files do not fit the input FASTA; the message says what to do next."""


class _RowError(SummaryError):
    """A prediction row that does not fit; :func:`summarize_reads` names the file."""


@dataclass(frozen=True, slots=True)
class ReadSummary:
    """One row of summary.tsv. ``max_virus_score`` is the file's own text, None without frames."""

    read_id: str
    length: int
    chunks: int
    frames: int
    viral_chunks: int
    max_virus_score: str | None

    @property
    def viral(self) -> bool:
        """Called viral: at least one chunk called viral."""
        return self.viral_chunks > 0

    @property
    def viral_fraction(self) -> str:
        """Chunks called viral / chunks of the read, 6 significant digits (0 without frames)."""
        return f"{self.viral_chunks / self.chunks:.6g}"

    def row(self) -> list[str]:
        """The summary.tsv fields, in :data:`SUMMARY_COLUMNS` order."""
        score = NA if self.max_virus_score is None else self.max_virus_score
        cells = (self.length, self.chunks, self.frames, self.viral_chunks, self.viral, score)
        return [self.read_id, *map(str, cells), self.viral_fraction]


def _tsv_rows(path: str | os.PathLike, header: Sequence[str]) -> Iterator[list[str]]:
    """Rows of a tab-separated file, fields verbatim (no quoting: ids may start with a quote),
    after checking its header."""
    with open(path, newline="") as handle:
        first = handle.readline().rstrip("\r\n").split("\t")
        if tuple(first) != tuple(header):
            raise SummaryError(f"{path}: header is {first}, expected {list(header)}")
        for lineno, line in enumerate(handle, 2):
            row = line.rstrip("\r\n").split("\t")
            if len(row) != len(header):
                raise SummaryError(
                    f"{path}: line {lineno} has {len(row)} fields, not {len(header)}"
                )
            yield row


def _chunk_tally(highest_tsv: str | os.PathLike) -> tuple[int, int]:
    """(chunks, chunks called viral) in prediction_results_highestscore.tsv, streamed."""
    chunks = viral = 0
    for _, flag in _tsv_rows(highest_tsv, HIGHEST_COLUMNS):
        chunks += 1
        viral += flag == "True"
    return chunks, viral


def _score(text: str) -> np.float32:
    return np.float32(text)


def call_rule(min_score: float | None) -> str:
    """The rule that called the chunks of summary.tsv, viral.fa and the run summary, in words."""
    if min_score is None:
        return "the original rule (best P(virus) >= best P(others))"
    return f"min_score {min_score}"


def check_min_score(min_score: float | None) -> None:
    """``min_score`` is null or a number in [0, 1] (NaN refused: it would call no chunk)."""
    if min_score is None:
        return
    if isinstance(min_score, bool) or not isinstance(min_score, int | float):
        raise SummaryError(
            f"config 'min_score' must be a number in [0, 1] or null, not {min_score!r}"
        )
    if not 0 <= min_score <= 1:
        raise SummaryError(f"config 'min_score' must be in [0, 1] or null, not {min_score!r}")


class _ReadRows:
    """One read's prediction rows, taken as they stream by (nothing per row is kept): frames,
    chunks with a frame, chunks called viral and the row with the highest score2 (the first of
    equals). A chunk is viral by the original rule (max score2 >= max score1, NaN skipped, the
    rule of the chunk table; counted in ``viral_original``) or, when ``min_score`` is set, when
    its max score2 (the file's text read as a float) is >= ``min_score``; ``viral`` counts the
    active rule. A chunk's rows are consecutive (index order), so only the current chunk's maxima
    are held, whatever the read's length."""

    def __init__(
        self, read_id: str, chunks: int, min_score: float | None = None,
        regions: RegionWriter | None = None,
    ) -> None:  # fmt: skip
        self.prefix, self.chunks, self.min_score = f"{read_id}_chunk_", chunks, min_score
        self.regions = regions  # told each viral chunk
        self.frames = self.framed = self.viral = self.viral_original = 0
        self.best: list[str] | None = None
        self._chunk, self._m1, self._m2 = 0, np.float32("nan"), np.float32("nan")
        self._b2, self._b2_text = -math.inf, NA

    def owns(self, row: list[str], k: int) -> bool:
        """The row's frame id is one of chunk ``k`` (1-based) of this read: the id the index
        stage wrote for it (``<read>_chunk_<k>`` and a 2-letter frame label)."""
        return k <= self.chunks and row[0][:-2] == f"{self.prefix}{k}"

    def add(self, row: list[str], k: int) -> None:
        if k != self._chunk:
            if k < self._chunk:
                raise _RowError(
                    f"prediction row {row[0]!r} comes after chunk {self._chunk} of its read: "
                    f"the rows are not in index order; {RERUN_HINT}"
                )
            self._close()
            self._chunk, self.framed = k, self.framed + 1
        self.frames += 1
        self._m1, self._m2 = np.fmax(self._m1, _score(row[2])), np.fmax(self._m2, _score(row[3]))
        if float(row[3]) > self._b2:  # NaN never is
            self._b2, self._b2_text = float(row[3]), row[3]
        # the highest score2, NaN skipped as pandas' max skips it (a NaN best only while no
        # other row has come)
        score2 = float(row[3])
        if self.best is None or (not math.isnan(score2) and not float(self.best[3]) >= score2):
            self.best = row

    def _close(self) -> None:
        if self._chunk:
            original = bool(self._m2 >= self._m1)
            self.viral_original += original
            viral = original if self.min_score is None else self._b2 >= self.min_score
            self.viral += viral
            if viral and self.regions is not None:
                self.regions.viral_chunk(self._chunk, self._b2, self._b2_text)
        self._m1, self._m2 = np.float32("nan"), np.float32("nan")
        self._b2, self._b2_text = -math.inf, NA

    def done(self) -> _ReadRows:
        self._close()
        self._chunk = 0
        return self


Indexed = tuple[list[str], int, int]  # a prediction row, its read's number, its chunk (1-based)


def _indexed_rows(rows: Iterator[list[str]], predictions_tsv, index_npy) -> Iterator[Indexed]:
    """Each prediction row with its read's number and its chunk's (1-based) number, from the
    frames index the predictions were made from (row i is index row i), read a block at a time."""
    index = open_index(index_npy)
    for lo in range(0, index.rows, INDEX_BLOCK):
        part = index.read(lo, lo + INDEX_BLOCK)
        pairs = zip(part["read"].tolist(), part["chunk"].tolist(), strict=True)
        for i, (read, chunk) in enumerate(pairs):
            row = next(rows, None)
            if row is None:
                raise SummaryError(
                    f"{predictions_tsv} has {lo + i} rows but {index_npy} {index.rows} frames: "
                    f"the predictions were not made from this index; {RERUN_HINT}"
                )
            yield row, read, chunk + 1
    if (row := next(rows, None)) is not None:
        raise SummaryError(
            f"{predictions_tsv}: {row[0]!r} and the rows after it have no frame in {index_npy} "
            f"({index.rows} frames): the predictions were not made from this index; {RERUN_HINT}"
        )


def _read_frames(
    read: Read, number: int, chunk_length: int, rows: Iterator[Indexed],
    pending: Indexed | None, min_score: float | None = None, regions: RegionWriter | None = None,
) -> tuple[_ReadRows, Indexed | None]:  # fmt: skip
    """The prediction rows of read ``number`` (the index's read column), tallied; returns the
    first row of a later read."""
    if regions is not None:
        regions.read(read.id, len(read.seq))
    mine = _ReadRows(read.id, chunks_of(len(read.seq), chunk_length), min_score, regions)
    item = pending if pending is not None else next(rows, None)
    while item is not None and item[1] == number:
        row, _, k = item
        if not mine.owns(row, k):
            raise _RowError(
                f"prediction row {row[0]!r} belongs to no read of the input: the frames index "
                f"puts it at chunk {k} of read {read.id!r} (read {number + 1}); the predictions "
                f"were made from other reads; {RERUN_HINT}"
            )
        mine.add(row, k)
        item = next(rows, None)
    if item is not None and item[1] < number:
        raise _RowError(
            f"prediction row {item[0][0]!r} comes after read {read.id!r} (read {number + 1}) "
            f"but the frames index puts it at read {item[1] + 1}: the rows are not in index "
            f"order; {RERUN_HINT}"
        )
    return mine.done(), item


def summarize_reads(
    fasta: str | os.PathLike | Sequence[str | os.PathLike],
    chunk_length: int,
    predictions_tsv: str | os.PathLike,
    highest_tsv: str | os.PathLike,
    index_npy: str | os.PathLike,
    min_score: float | None = None,
    regions: RegionWriter | None = None,
) -> Iterator[tuple[Read, ReadSummary]]:
    """Each input read with its summary row, in input order (see the module docstring).
    Chunks are called viral by the original rule, or by ``min_score`` when set (see
    :func:`call_rule`); the check against the chunk table always uses the original rule.
    ``regions`` is told each read and its viral chunks as they stream by (regions.tsv); the
    caller closes it.

    Streams the reads, the prediction rows and ``index_npy`` (frames.index.npy, the frames the
    predictions were made from) together; holds one read's rows and one index block at a time.
    Raises :class:`SummaryError` when a prediction row matches no read, or when the chunk table
    does not agree with the prediction rows.
    """
    rows = _indexed_rows(_tsv_rows(predictions_tsv, PREDICTION_COLUMNS), predictions_tsv, index_npy)
    pending: Indexed | None = None
    framed = viral_total = 0
    for number, read in enumerate(_reads(fasta)):
        try:
            mine, pending = _read_frames(
                read, number, chunk_length, rows, pending, min_score, regions
            )
        except _RowError as err:
            raise SummaryError(f"{predictions_tsv}: {err}") from None
        score = None if mine.best is None else mine.best[3]
        framed += mine.framed
        viral_total += mine.viral_original
        yield read, ReadSummary(read.id, len(read.seq), mine.chunks, mine.frames, mine.viral, score)
    if pending is not None:
        raise SummaryError(
            f"{predictions_tsv}: {pending[0][0]!r} belongs to no read of {fasta} (the frames "
            f"index puts it at read {pending[1] + 1}, after the last): the predictions were made "
            f"from other reads; {RERUN_HINT}"
        )
    if _chunk_tally(highest_tsv) != (framed, viral_total):
        raise SummaryError(
            f"{highest_tsv} does not agree with {predictions_tsv} ({_chunk_tally(highest_tsv)} "
            f"chunks / viral, the frames give {(framed, viral_total)}): the two prediction files "
            "disagree: delete them and rerun (rule predict)"
        )


def _reads(fasta) -> Iterator[Read]:
    yield from iter_sample_reads(fasta, check_duplicates=False)  # checked by the index stage


@dataclass
class SampleTotals:
    """Counts over a sample's reads, and the reads with the highest virus scores."""

    reads: int = 0
    chunks: int = 0
    frames: int = 0
    viral_chunks: int = 0
    viral_reads: int = 0
    reads_without_frames: int = 0
    top: list[tuple[float, int, ReadSummary]] = field(default_factory=list, repr=False)

    def add(self, read: ReadSummary, keep: int = 20) -> None:
        """Count one read; keep it among the ``keep`` best-scored reads."""
        self.reads += 1
        self.chunks += read.chunks
        self.frames += read.frames
        self.viral_chunks += read.viral_chunks
        self.viral_reads += read.viral
        if read.max_virus_score is None:
            self.reads_without_frames += 1
            return
        score = float(read.max_virus_score)
        if math.isnan(score):  # every frame scored NaN: not among the best (NaN orders nothing)
            return
        item = (score, -self.reads, read)  # ties: earlier read first
        (heapq.heappush if len(self.top) < keep else heapq.heappushpop)(self.top, item)

    def best(self) -> list[ReadSummary]:
        """The kept reads, highest score first."""
        return [item[2] for item in sorted(self.top, key=lambda t: t[:2], reverse=True)]


def _write_fasta_record(handle, read: Read, summary: ReadSummary) -> None:
    score = summary.max_virus_score or NA
    handle.write(
        f">{read.id} viral_chunks={summary.viral_chunks}/{summary.chunks} max_virus_score={score}\n"
    )
    step = (
        FASTA_WIDTH * 4096
    )  # a long read (on disk: virnuc_core.data.long_records) a piece at a time
    for at in range(0, len(read.seq), step):
        piece = read.seq[at : at + step]
        handle.writelines(
            piece[start : start + FASTA_WIDTH] + "\n" for start in range(0, len(piece), FASTA_WIDTH)
        )


def write_read_outputs(
    reads: Iterable[tuple[Read, ReadSummary]],
    summary_tsv: str | os.PathLike,
    viral_fasta: str | os.PathLike | None = None,
) -> SampleTotals:
    """Write summary.tsv (and viral.fa, the reads with a viral chunk, when asked); totals."""
    totals = SampleTotals()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_writer(summary_tsv))
        fa = stack.enter_context(atomic_writer(viral_fasta)) if viral_fasta else None
        out.write("\t".join(SUMMARY_COLUMNS) + "\n")
        for read, summary in reads:
            totals.add(summary)
            out.write("\t".join(summary.row()) + "\n")
            if fa is not None and summary.viral:
                _write_fasta_record(fa, read, summary)
    return totals


# --------------------------------------------------------------------------------------------
# Run summary (HTML, shown in the Snakemake report)


# --------------------------------------------------------------------------------------------
# Figures
