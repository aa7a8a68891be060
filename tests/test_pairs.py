"""Paired-end reads (issue 35): mates read in lockstep, checked pairwise (Casava 1.8: the same
first word; older: ``/1`` and ``/2``), renamed ``<pair>/1`` and ``<pair>/2`` and interleaved
(virnuc_core.data.pairs); mismatched mates and mate files of unequal length refused naming the file,
the line and both ids; interleaved files; a paired sample's frames in mate order (index_sample).
References are the FASTQ text cut by hand (4 lines a record), not the reader under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnuc_core.data.index import index_sample
from virnuc_core.data.pairs import (
    InterleavedFile,
    MateFiles,
    iter_pair_batches,
    iter_sample_batches,
    iter_sample_reads,
)
from virnuc_core.data.records import InputError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def real_pair() -> tuple[Path, Path]:
    """The real Illumina HiSeq pair (Casava 1.8 headers) in ../shared/data/real."""
    pair = REAL / "HNSCC1_R1.fastq", REAL / "HNSCC1_R2.fastq"
    if not all(p.is_file() for p in pair):
        pytest.fail(
            f"{pair} not found: the tests need the project's shared/ folder beside the repo"
        )
    return pair


def records(path: Path) -> list[list[str]]:
    """The 4-line records of a FASTQ file, by hand."""
    lines = path.read_text().splitlines()
    return [lines[i : i + 4] for i in range(0, len(lines), 4)]


def write(path: Path, recs: list[list[str]]) -> Path:
    path.write_text("".join("\n".join(r) + "\n" for r in recs))
    return path


def fastq(*reads: tuple[str, str]) -> list[list[str]]:
    return [[f"@{h}", s, "+", "I" * len(s)] for h, s in reads]


def test_a_real_casava_pair_gives_mate_1_then_mate_2_of_each_pair(tmp_path, real_pair):
    one, two = records(real_pair[0]), records(real_pair[1])
    # mate 2 cut to lengths that vary, so that the two files' batches end at other reads
    two = [
        [h, s[: 30 + 7 * (k % 10)], p, q[: 30 + 7 * (k % 10)]] for k, (h, s, p, q) in enumerate(two)
    ]
    r2 = write(tmp_path / "R2.fq", two)
    # small batches: the two files' batches end at other reads and are re-cut to pairs
    batches = list(iter_pair_batches([MateFiles(str(real_pair[0]), str(r2))], batch_bases=1000))
    reads = [(i, s) for b in batches for i, s in zip(b.ids, b.seqs, strict=True)]
    expected = []
    for a, b in zip(one, two, strict=True):
        pair = a[0][1:].split()[0]
        expected += [(pair + "/1", a[1]), (pair + "/2", b[1])]
    assert reads == expected
    assert len(reads) == 200 and len(batches) > 10
    assert reads[0][0] == "HWI-1KL120:88:D0LRBACXX:1:1101:1780:2146/1"
    # the same reads through the reader every stage uses
    assert [
        (r.id, r.seq) for r in iter_sample_reads([MateFiles(str(real_pair[0]), str(r2))])
    ] == expected


def test_batches_stay_small_and_numbered_in_sample_order(real_pair):
    batches = list(iter_pair_batches([MateFiles(*map(str, real_pair))], batch_bases=1000))
    assert max(len(b) for b in batches) <= 2 * (500 // 101 + 1)  # streamed, not the sample
    assert [b.first for b in batches] == [sum(map(len, batches[:k])) for k in range(len(batches))]


def test_mates_out_of_order_are_refused_naming_file_line_and_both_ids(tmp_path):
    r1 = write(
        tmp_path / "R1.fq", fastq(("a 1:N:0:X", "ACGT"), ("b 1:N:0:X", "ACGT"), ("c 1:N", "AC"))
    )
    r2 = write(
        tmp_path / "R2.fq", fastq(("a 2:N:0:X", "ACGT"), ("c 2:N:0:X", "ACGT"), ("b 2:N", "AC"))
    )
    with pytest.raises(InputError) as err:
        list(iter_sample_batches([MateFiles(str(r1), str(r2))]))
    assert str(err.value) == (
        f"{r2}: line 5, record 'c': mate 2 'c' does not match mate 1 'b' (line 5 of {str(r1)!r}): "
        "mates share the first word of the header (or differ only in a final /1 and /2); mate "
        "files hold the same pairs in the same order"
    )


def test_a_longer_mate_1_file_is_refused_naming_its_extra_read(tmp_path):
    r1 = write(tmp_path / "R1.fq", fastq(("a", "ACGT"), ("b", "ACGT"), ("c", "ACGT")))
    r2 = write(tmp_path / "R2.fq", fastq(("a", "ACGT"), ("b", "ACGT")))
    with pytest.raises(InputError) as err:
        list(iter_sample_batches([MateFiles(str(r1), str(r2))]))
    assert str(err.value) == (
        f"{r1}: line 9, record 'c': {str(r1)!r} has more reads than its mate file {str(r2)!r}, "
        "which ends after 2 reads (its last 'b' at line 5): mate files hold the same pairs in "
        "the same order (were they cut or filtered apart?)"
    )


def test_a_longer_mate_2_file_is_refused_too(tmp_path):
    r1 = write(tmp_path / "R1.fq", fastq(("a", "ACGT")))
    r2 = write(tmp_path / "R2.fq", fastq(("a", "ACGT"), ("b", "ACGT")))
    with pytest.raises(InputError, match=rf"^{r2}: line 5, record 'b': .* ends after 1 reads"):
        list(iter_sample_batches([MateFiles(str(r1), str(r2))]))


def test_old_style_ids_lose_their_suffix_in_the_pair_id(tmp_path):
    r1 = write(tmp_path / "R1.fq", fastq(("x/1", "ACGT"), ("y/1 some text", "GG")))
    r2 = write(tmp_path / "R2.fq", fastq(("x/2", "TTTT"), ("y/2", "CC")))
    reads = list(iter_sample_reads([MateFiles(str(r1), str(r2))]))
    assert [(r.id, r.seq) for r in reads] == [
        ("x/1", "ACGT"), ("x/2", "TTTT"), ("y/1", "GG"), ("y/2", "CC")
    ]  # fmt: skip


@pytest.mark.parametrize(("id1", "id2"), [("x/2", "x/1"), ("x/1", "y/2"), ("x/1", "x/1")])
def test_old_style_ids_must_be_1_then_2_of_one_word(tmp_path, id1, id2):
    r1 = write(tmp_path / "R1.fq", fastq((id1, "ACGT")))
    r2 = write(tmp_path / "R2.fq", fastq((id2, "ACGT")))
    reads = [MateFiles(str(r1), str(r2))]
    copy = "; both name the same mate: is one file a copy of the other" if id1 == id2 else ""
    with pytest.raises(InputError, match=f"mate 2 '{id2}' does not match mate 1 '{id1}'.*{copy}"):
        list(iter_sample_reads(reads))


def test_an_interleaved_file_alternates_mate_1_and_mate_2(tmp_path):
    path = write(
        tmp_path / "il.fq",
        fastq(("p 1:N", "AAAA"), ("p 2:N", "CCCC"), ("q/1", "GG"), ("q/2", "TT")),
    )
    reads = list(iter_sample_reads([InterleavedFile(str(path))]))
    assert [(r.id, r.seq, r.line) for r in reads] == [
        ("p/1", "AAAA", 1), ("p/2", "CCCC", 5), ("q/1", "GG", 9), ("q/2", "TT", 13)
    ]  # fmt: skip


def test_an_interleaved_file_out_of_step_is_refused_naming_both_lines(tmp_path):
    path = write(tmp_path / "il.fq", fastq(("p", "AAAA"), ("p", "CCCC"), ("q", "GG"), ("r", "TT")))
    with pytest.raises(InputError) as err:
        list(iter_sample_reads([InterleavedFile(str(path))]))
    assert str(err.value).startswith(
        f"{path}: line 13, record 'r': mate 2 'r' does not match mate 1 'q' (line 9): "
    )


def test_an_interleaved_file_with_an_odd_record_count_is_refused(tmp_path):
    path = write(tmp_path / "il.fq", fastq(("p", "AAAA"), ("p", "CCCC"), ("q", "GG")))
    with pytest.raises(InputError) as err:
        list(iter_sample_reads([InterleavedFile(str(path))]))
    assert str(err.value) == (
        f"{path}: line 9, record 'q': the file ends with a mate 1 without its mate 2 (an odd "
        "number of records, 3): an interleaved file alternates mate 1, mate 2"
    )


def test_a_pair_given_twice_is_a_duplicate_read(tmp_path):
    r1 = write(tmp_path / "R1.fq", fastq(("a", "ACGT"), ("b", "ACGT")))
    r2 = write(tmp_path / "R2.fq", fastq(("a", "ACGT"), ("b", "ACGT")))
    s1 = write(tmp_path / "S1.fq", fastq(("c", "ACGT"), ("b", "ACGT")))
    s2 = write(tmp_path / "S2.fq", fastq(("c", "ACGT"), ("b", "ACGT")))
    with pytest.raises(InputError) as err:
        list(iter_sample_batches([MateFiles(str(r1), str(r2)), MateFiles(str(s1), str(s2))]))
    assert str(err.value) == f"{s1}: line 5, record 'b/1': duplicate id (first at line 5 of {r1})"


def test_a_paired_sample_s_frames_follow_mate_1_mate_2(tmp_path):
    r1 = write(tmp_path / "R1.fq", fastq(("a 1:N", "ATGGCC" * 10), ("b 1:N", "ATGAAA" * 10)))
    r2 = write(tmp_path / "R2.fq", fastq(("a 2:N", "ATGCCC" * 10), ("b 2:N", "ATGTTT" * 10)))
    outputs = {k: str(tmp_path / f"{k}.out") for k in ("frames", "proteins", "index", "counts")}
    index_sample([MateFiles(str(r1), str(r2))], 300, outputs)
    headers = [line[1:] for line in Path(outputs["frames"]).read_text().splitlines()[0::2]]
    reads = list(dict.fromkeys(h.split("_chunk_")[0] for h in headers))
    assert reads == ["a/1", "a/2", "b/1", "b/2"]
    assert json.loads(Path(outputs["counts"]).read_text())["reads"] == 4
