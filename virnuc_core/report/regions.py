"""regions.tsv: each run of consecutive viral chunks of a read, merged into one region.

A region is a run of chunks ``k, k+1, ...`` of one read that are all called viral (by the rule
of summary.tsv: the original rule, or ``min_score``); a chunk with no kept frame is not viral and
ends a run. Its coordinates are the read's, 0-based half-open: from the start of its first
chunk's window to the end of its last chunk's window, the windows of spec §1 (chunks overlap, and
the last chunk ends at the read's end). ``max_virus_score`` is the highest P(virus) of the
region's chunks as written in prediction_results.tsv; ``mean_virus_score`` the mean of each
chunk's best P(virus).

Streamed: :class:`RegionWriter` takes the viral chunks in input order and holds one open region
(a few numbers), whatever the sample's or the read's size.
"""

from __future__ import annotations

import math
from typing import TextIO

from virnuc_core.data import frames
from virnuc_core.data.frames import chunks_of

REGION_COLUMNS = (
    "read_id", "start", "end", "chunks", "max_virus_score", "mean_virus_score",
)  # fmt: skip


def chunk_window(length: int, chunk_length: int, k: int) -> tuple[int, int]:
    """The half-open base range of chunk ``k`` (0-based) of a read of ``length`` bases (spec §1),
    computed alone (:func:`virnuc_core.data.frames.chunk_window`, the arithmetic of
    :func:`virnuc_core.data.frames.chunk_bounds`)."""
    n = chunks_of(length, chunk_length)
    if not 0 <= k < n:
        raise ValueError(f"a read of {length} bases has chunks 0..{n - 1} at L={chunk_length}")
    start, end = frames.chunk_window(length, chunk_length, k)
    return int(start), int(end)


class RegionWriter:
    """Writes regions.tsv rows to ``handle`` as viral chunks are reported, read by read.

    Call :meth:`read` before each read's chunks, :meth:`viral_chunk` for each viral chunk in
    chunk order, and :meth:`close` at the end (it writes the last open region)."""

    def __init__(self, handle: TextIO, chunk_length: int) -> None:
        self.handle, self.chunk_length = handle, chunk_length
        self.read_id, self.length = "", 0
        self.regions = 0
        self._first = self._last = self._n = 0  # the open region's chunks (1-based); 0: none
        self._max, self._max_text, self._sum = -math.inf, "", 0.0
        handle.write("\t".join(REGION_COLUMNS) + "\n")

    def read(self, read_id: str, length: int) -> None:
        """The chunks reported next are this read's."""
        self._flush()
        self.read_id, self.length = read_id, length

    def viral_chunk(self, k: int, score: float, text: str) -> None:
        """Chunk ``k`` (1-based) of the current read is viral; its best P(virus) is ``score``,
        written ``text`` in prediction_results.tsv."""
        if self._n and k != self._last + 1:
            self._flush()
        if not self._n:
            self._first = k
        self._last, self._n, self._sum = k, self._n + 1, self._sum + score
        if score > self._max:
            self._max, self._max_text = score, text

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._n:
            return
        start = chunk_window(self.length, self.chunk_length, self._first - 1)[0]
        end = chunk_window(self.length, self.chunk_length, self._last - 1)[1]
        cells = (start, end, self._n, self._max_text, f"{self._sum / self._n:.6g}")
        self.handle.write("\t".join([self.read_id, *map(str, cells)]) + "\n")
        self.regions += 1
        self._n, self._max, self._sum = 0, -math.inf, 0.0
