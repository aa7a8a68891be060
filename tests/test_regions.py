"""regions.tsv: runs of consecutive viral chunks merged into regions in read coordinates.

The references here are written out again from the spec (§1, chunk windows as a list of steps;
§4, the chunk rule), read back with csv and Biopython, and checked against the original's own
chunks (the golden files); the scores are injected (prediction_results.tsv written by hand with
known scores), no model runs.
"""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO

from tests.conftest import GOLDEN
from tests.index_helpers import frames_index
from virnuc_core.report import regions, summary
from virnuc_core.report.predictions import write_predictions

REAL = GOLDEN.parents[1] / "data" / "real"  # ../shared/data/real beside the repository
COLUMNS = ["read_id", "start", "end", "chunks", "max_virus_score", "mean_virus_score"]


def spec_windows(length: int, chunk_length: int) -> list[tuple[int, int]]:
    """Spec §1 written out: n chunks, n-1 boundary steps back (the first r-(n-1)*floor(r/n) of
    them one base longer), each chunk L long from its start, cut at the read's end."""
    n = max(1, -(-length // chunk_length))
    r = n * chunk_length - length
    q = r // n
    longer = r - (n - 1) * q
    steps = [q + 1 if i < longer else q for i in range(n - 1)]
    starts = [0]
    for step in steps:
        starts.append(starts[-1] + chunk_length - step)
    return [(s, min(s + chunk_length, length)) for s in starts]


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def expected_regions(fasta: Path, chunk_length: int, predictions: Path, min_score=None) -> list:
    """regions.tsv rows from the FASTA and the frame table, independently: per chunk the best
    score1/score2 (as written), viral by the rule, runs of consecutive viral chunks merged."""
    best1, best2, text = defaultdict(lambda: -1.0), defaultdict(lambda: -1.0), {}
    for row in _tsv(predictions):
        chunk = row["Sequence_ID"][:-2]
        best1[chunk] = max(best1[chunk], float(row["score1"]))
        if float(row["score2"]) > best2[chunk]:
            best2[chunk], text[chunk] = float(row["score2"]), row["score2"]
    out = []
    for rec in SeqIO.parse(fasta, "fasta"):
        run: list[tuple[int, str]] = []  # (chunk index, chunk id) of the open run
        windows = spec_windows(len(rec.seq), chunk_length)
        for k in range(len(windows) + 1):
            c = f"{rec.id}_chunk_{k + 1}"
            framed = k < len(windows) and c in best2
            threshold = best1[c] if min_score is None else min_score
            if framed and best2[c] >= threshold:
                run.append((k, c))
                continue
            if run:
                scores = [best2[cid] for _, cid in run]
                top = max(run, key=lambda item: best2[item[1]])[1]
                first, last = windows[run[0][0]][0], windows[run[-1][0]][1]
                out.append([rec.id, first, last, len(run), text[top], sum(scores) / len(scores)])
                run = []
    return out


def _rows(path: Path) -> list:
    got = _tsv(path)
    assert not got or list(got[0]) == COLUMNS
    return [
        [r["read_id"], int(r["start"]), int(r["end"]), int(r["chunks"]), r["max_virus_score"],
         float(r["mean_virus_score"])]
        for r in got
    ]  # fmt: skip


def _same(got: list, want: list) -> None:
    assert [g[:5] for g in got] == [w[:5] for w in want]
    assert [g[5] for g in got] == pytest.approx([w[5] for w in want], abs=1e-6)


def _write_regions(fasta, chunk_length, pred, high, min_score=None) -> list:
    out = io.StringIO()
    writer = regions.RegionWriter(out, chunk_length)
    for _ in summary.summarize_reads(
        fasta, chunk_length, pred, high, frames_index(fasta, pred, chunk_length), min_score, writer
    ):
        pass
    writer.close()
    path = Path(pred).with_name(f"regions_{min_score}.tsv")
    path.write_text(out.getvalue())
    return _rows(path)


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_length", [300, 500])
def test_chunk_windows_are_the_original_chunks(golden_dir, chunk_length):
    chunked = golden_dir / f"chunked{chunk_length}.fa"
    chunks = {r.id: str(r.seq) for r in SeqIO.parse(chunked, "fasta")}
    seen = 0
    for rec in SeqIO.parse(golden_dir / "input.fa", "fasta"):
        seq, n = str(rec.seq), max(1, -(-len(rec.seq) // chunk_length))
        for k in range(n):
            start, end = regions.chunk_window(len(seq), chunk_length, k)
            assert seq[start:end] == chunks[f"{rec.id}_chunk_{k + 1}"], (rec.id, k)
            seen += 1
    assert seen == len(chunks)


def test_chunk_windows_follow_the_spec_steps_at_every_length():
    for chunk_length in (7, 300, 500):
        for length in range(1, 4 * chunk_length + 2):
            want = spec_windows(length, chunk_length)
            got = [regions.chunk_window(length, chunk_length, k) for k in range(len(want))]
            assert got == want, (chunk_length, length)
    assert spec_windows(500, 300) == [(0, 300), (249, 500)]  # the spec's own example
    with pytest.raises(ValueError, match="chunks 0..1"):
        regions.chunk_window(500, 300, 2)


def _provirus(tmp_path: Path) -> tuple[Path, tuple[int, int]]:
    """A phiX174 segment inserted into chloroplast DNA (a provirus-like read of 7,480 bases:
    15 chunks at L=500, boundary steps of 2 and 1 bases), a host-only read, and the whole
    phiX174 genome (5,386 bases: 11 chunks, every step 11 bases, the last chunk 496 bases)."""
    host = str(SeqIO.read(REAL / "Athaliana_chloroplast_NC_000932.fna", "fasta").seq)
    phage = str(SeqIO.read(REAL / "phiX174_NC_001422.fna", "fasta").seq)
    insert = (3000, 5400)
    read = host[10_000:13_000] + phage[:2400] + host[20_000:22_080]
    assert len(read) == 7480 and read[insert[0] : insert[1]] == phage[:2400]
    fasta = tmp_path / "reads.fa"
    fasta.write_text(
        f">provirus\n{read}\n>host\n{host[40_000:41_200]}\n>phiX174\n{phage}\n"
    )  # fmt: skip
    return fasta, insert


def _injected_scores(fasta: Path, insert: tuple[int, int], tmp_path: Path):
    """Known scores by how much of each chunk window is phage: >= 95%: 0.97 (and a weaker
    frame 0.6); >= 50%: 0.85; host: 0.1 and 0.2, except provirus chunk 14 (0.55, a lone host
    chunk viral by the original rule only); phiX174 chunk 5 has no kept frame."""
    ids, scores = [], []
    for rec in SeqIO.parse(fasta, "fasta"):
        for k, (start, end) in enumerate(spec_windows(len(rec.seq), 500), 1):
            chunk = f"{rec.id}_chunk_{k}"
            if rec.id == "phiX174":
                phage = 1.0 if k != 5 else None
            elif rec.id == "provirus":
                phage = max(0, min(end, insert[1]) - max(start, insert[0])) / (end - start)
            else:
                phage = 0.0
            if phage is None:
                continue
            if phage >= 0.95:
                ids += [f"{chunk}F1", f"{chunk}R1"]
                scores += [[0.03, 0.97], [0.4, 0.6]]
            elif phage >= 0.5:
                ids += [f"{chunk}F2"]
                scores += [[0.15, 0.85]]
            elif (rec.id, k) == ("provirus", 14):
                ids += [f"{chunk}R3"]
                scores += [[0.45, 0.55]]
            else:
                ids += [f"{chunk}F1", f"{chunk}R2"]
                scores += [[0.9, 0.1], [0.8, 0.2]]
    pred, high = tmp_path / "p.tsv", tmp_path / "h.tsv"
    write_predictions(ids, np.array(scores, np.float32), pred, high)
    return pred, high


def test_provirus_regions_follow_the_chunk_windows_and_min_score(tmp_path):
    fasta, insert = _provirus(tmp_path)
    pred, high = _injected_scores(fasta, insert, tmp_path)
    seqs = {r.id: str(r.seq) for r in SeqIO.parse(fasta, "fasta")}
    phage = str(SeqIO.read(REAL / "phiX174_NC_001422.fna", "fasta").seq)
    by_rule = {}
    for min_score in (None, 0.9, 0.99):
        got = _write_regions(fasta, 500, pred, high, min_score)
        _same(got, expected_regions(fasta, 500, pred, min_score))
        by_rule[min_score] = got
    w = spec_windows(7480, 500)  # chunk k (0-based) starts at 500k minus the steps so far
    assert [s for s, _ in w[:8]] == [0, 498, 996, 1494, 1992, 2490, 2988, 3487]
    assert w[-1] == (6980, 7480)
    p = spec_windows(5386, 500)
    assert p[3] == (1467, 1967) and p[5] == (2445, 2945) and p[10] == (4890, 5386)
    assert [g[:5] for g in by_rule[None]] == [
        ["provirus", w[6][0], w[10][1], 5, "0.97"],  # [2988, 5484): chunks 7..11
        ["provirus", w[13][0], w[13][1], 1, "0.55"],  # the lone host chunk 14
        ["phiX174", 0, p[3][1], 4, "0.97"],  # chunk 5 has no kept frame: two regions
        ["phiX174", p[5][0], 5386, 6, "0.97"],  # the last chunk ends at the read's end
    ]  # fmt: skip
    assert by_rule[None][0][5] == pytest.approx((4 * 0.97 + 0.85) / 5, abs=1e-6)
    # min_score 0.9: the boundary chunk (0.85) and the lone host chunk (0.55) are not viral
    assert [g[:4] for g in by_rule[0.9]] == [
        ["provirus", 2988, w[9][1], 4], ["phiX174", 0, 1967, 4], ["phiX174", 2445, 5386, 6],
    ]  # fmt: skip
    assert by_rule[0.99] == []
    start, end = by_rule[0.9][0][1:3]  # the region holds the inserted phage, little host
    assert phage[:1900] in seqs["provirus"][start:end] and end - start < 2400 + 500


def test_summarize_sample_writes_regions_tsv(tmp_path):
    from tests.test_report import _summarize

    fasta, insert = _provirus(tmp_path)
    pred, high = _injected_scores(fasta, insert, tmp_path)
    outs = _summarize(tmp_path, fasta, pred, high, chunks=15 + 3 + 11, min_score=0.9, regions=True)
    _same(_rows(outs["regions"]), expected_regions(fasta, 500, pred, 0.9))
    assert len(_rows(outs["regions"])) == 3


def test_region_writer_holds_one_region_whatever_its_length():
    def peak(chunks: int) -> int:
        out = io.StringIO()
        tracemalloc.start()
        try:
            writer = regions.RegionWriter(out, 10)
            writer.read("r", chunks * 10)
            for k in range(1, chunks + 1):
                writer.viral_chunk(k, 0.5 + k / (4 * chunks), "x")
            writer.close()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert out.getvalue().splitlines()[1].split("\t")[:4] == ["r", "0", str(chunks * 10),
                                                                     str(chunks)]  # fmt: skip

    small, large = peak(1_000), peak(200_000)
    assert large - small < 20_000, (small, large)
