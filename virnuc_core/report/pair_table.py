"""``pairs.tsv`` of a paired sample: one row per pair, mate 1 and mate 2 of ``summary.tsv``
taken together, in input order.

Columns: ``pair_id``; ``viral`` (True when either mate is called viral); ``viral_mates`` (0, 1
or 2); ``max_virus_score`` (the higher of the two mates' scores, as written in summary.tsv; NA
when neither mate has a kept frame). summary.tsv is streamed (two rows at a time) and its
columns are found by name in its header, so added columns do not move them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from virnuc_core.util.files import atomic_writer

PAIR_COLUMNS = ("pair_id", "viral", "viral_mates", "max_virus_score")
NEEDED = ("read_id", "viral", "max_virus_score")  # summary.tsv columns read, by name
NA = "NA"
_VIRAL = {"True": True, "False": False}


class PairTableError(ValueError):
    """summary.tsv cannot be read as the mates of a paired sample; says where and why."""


def _rows(path: str | os.PathLike) -> Iterator[tuple[int, str, bool, str]]:
    """(line, read id, viral, score text) of each summary.tsv row."""
    with open(path, newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        missing = [c for c in NEEDED if c not in header]
        if missing:
            raise PairTableError(f"{str(path)!r}: line 1 lacks the column(s) {missing}: {header}")
        at = [header.index(c) for c in NEEDED]
        for line, text in enumerate(handle, 2):
            row = text.rstrip("\r\n").split("\t")
            if len(row) != len(header):
                raise PairTableError(
                    f"{str(path)!r}: line {line} has {len(row)} fields, not {len(header)}"
                )
            rid, viral, score = (row[k] for k in at)
            if viral not in _VIRAL:
                raise PairTableError(
                    f"{str(path)!r}: line {line}: viral is {viral!r}, not True/False"
                )
            yield line, rid, _VIRAL[viral], score


def _higher(a: str, b: str) -> str:
    """The higher of two score texts (NA and NaN below any score); the first on a tie."""
    if b == NA or math.isnan(float(b)):
        return a
    if a == NA or math.isnan(float(a)):
        return b
    return b if float(b) > float(a) else a


def pair_rows(summary_tsv: str | os.PathLike) -> Iterator[list[str]]:
    """The pairs.tsv rows of a paired sample's summary.tsv (rows ``<pair>/1``, ``<pair>/2``)."""
    rows = _rows(summary_tsv)
    for line, id1, viral1, score1 in rows:
        second = next(rows, None)
        if second is None:
            raise PairTableError(
                f"{str(summary_tsv)!r}: line {line}: {id1!r} is the last row, without its "
                "mate 2: summary.tsv is not of a paired sample; rerun its summarize_sample"
            )
        line2, id2, viral2, score2 = second
        pair = id1[:-2]
        if id1[-2:] != "/1" or id2 != pair + "/2":
            raise PairTableError(
                f"{str(summary_tsv)!r}: lines {line} and {line2}: {id1!r} and {id2!r} are not "
                "<pair>/1 and <pair>/2: summary.tsv is not of a paired sample; rerun its "
                "summarize_sample"
            )
        mates = viral1 + viral2
        yield [pair, str(mates > 0), str(mates), _higher(score1, score2)]


def write_pair_table(summary_tsv: str | os.PathLike, pairs_tsv: str | os.PathLike) -> int:
    """Write ``pairs_tsv`` from ``summary_tsv`` (written aside, renamed at the end); the pairs."""
    pairs = 0
    with atomic_writer(pairs_tsv) as out:
        out.write("\t".join(PAIR_COLUMNS) + "\n")
        for row in pair_rows(summary_tsv):
            out.write("\t".join(row) + "\n")
            pairs += 1
    return pairs
