"""pairs.tsv of a paired sample (virnuc_core.report.pair_table): one row per pair of summary.tsv's
``<pair>/1``, ``<pair>/2`` rows; columns found by name; a summary that is not of pairs refused."""

from __future__ import annotations

import pytest

from virnuc_core.report.pair_table import PairTableError, write_pair_table

# summary.tsv columns in another order, with one more column: found by name
HEADER = "max_virus_score\tread_id\tlength\tviral\tregions"


def tsv(tmp_path, *rows: str):
    path = tmp_path / "summary.tsv"
    path.write_text(HEADER + "\n" + "".join(row + "\n" for row in rows))
    return path


def test_each_pair_is_one_row_with_its_mates_taken_together(tmp_path):
    summary = tsv(
        tmp_path,
        "NA\tp1/1\t101\tFalse\t-",
        "NA\tp1/2\t101\tFalse\t-",  # neither mate has a frame: NA
        "0.25\tp2/1\t101\tFalse\t-",
        "NA\tp2/2\t101\tFalse\t-",  # one mate scored
        "0.9\tp3/1\t101\tTrue\t1-101",
        "0.31\tp3/2\t101\tFalse\t-",  # mate 1 viral
        "0.6\tp4/1\t101\tTrue\t-",
        "0.95\tp4/2\t101\tTrue\t-",  # both viral, mate 2 higher
        "NA\tx/1/1\t9\tFalse\t-",
        "0.5\tx/1/2\t9\tTrue\t-",  # a pair id that itself ends in /1
    )
    out = tmp_path / "pairs.tsv"
    assert write_pair_table(summary, out) == 5
    assert out.read_text().splitlines() == [
        "pair_id\tviral\tviral_mates\tmax_virus_score",
        "p1\tFalse\t0\tNA",
        "p2\tFalse\t0\t0.25",
        "p3\tTrue\t1\t0.9",
        "p4\tTrue\t2\t0.95",
        "x/1\tTrue\t1\t0.5",
    ]


@pytest.mark.parametrize(
    ("second", "problem"),
    [("q/2", "'p/1' and 'q/2' are not <pair>/1 and <pair>/2"), ("p/1", "'p/1' and 'p/1' are not")],
)
def test_rows_that_are_not_mates_are_refused_naming_the_lines(tmp_path, second, problem):
    summary = tsv(tmp_path, "0.1\tp/1\t5\tFalse\t-", f"0.1\t{second}\t5\tFalse\t-")
    with pytest.raises(PairTableError) as err:
        write_pair_table(summary, tmp_path / "pairs.tsv")
    assert str(err.value).startswith(f"{str(summary)!r}: lines 2 and 3: {problem}")
    assert not (tmp_path / "pairs.tsv").exists()


def test_a_last_mate_1_alone_is_refused(tmp_path):
    summary = tsv(
        tmp_path, "0.1\tp/1\t5\tFalse\t-", "0.1\tp/2\t5\tFalse\t-", "NA\tq/1\t5\tFalse\t-"
    )
    with pytest.raises(PairTableError, match=r"line 4: 'q/1' is the last row, without its mate 2"):
        write_pair_table(summary, tmp_path / "pairs.tsv")


def test_a_summary_without_a_needed_column_is_refused(tmp_path):
    path = tmp_path / "summary.tsv"
    path.write_text("read_id\tlength\tmax_virus_score\np/1\t5\tNA\n")
    with pytest.raises(PairTableError, match=r"line 1 lacks the column\(s\) \['viral'\]"):
        write_pair_table(path, tmp_path / "pairs.tsv")


def test_a_nan_mate_score_is_skipped_as_pandas_max_skips_it(tmp_path):
    summary = tsv(
        tmp_path,
        "nan\tp/1\t101\tFalse\t-",
        "0.9\tp/2\t101\tTrue\t-",  # the pair's best is mate 2's, whichever mate is NaN
        "0.4\tq/1\t101\tFalse\t-",
        "nan\tq/2\t101\tFalse\t-",
        "nan\tr/1\t101\tFalse\t-",
        "nan\tr/2\t101\tFalse\t-",  # both NaN: nothing better to say
    )
    write_pair_table(summary, tmp_path / "pairs.tsv")
    rows = [line.split("\t") for line in (tmp_path / "pairs.tsv").read_text().splitlines()[1:]]
    assert [(r[0], r[3]) for r in rows] == [("p", "0.9"), ("q", "0.4"), ("r", "nan")]
