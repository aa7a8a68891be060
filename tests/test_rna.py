"""Reads written as RNA (U for T) give the frames of their DNA spelling (virnuc_core.data.rna)."""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path

import pytest
from Bio import SeqIO
from Bio.Seq import Seq

from tests.workflow_helpers import DEMO_READS
from virnuc_core.data.index import index_sample
from virnuc_core.data.reads import InputError

NAMES = ("frames", "proteins", "index", "counts")


def as_rna(text: str) -> str:
    """FASTA or FASTQ ``text`` with T/t written U/u in the sequence lines only."""
    lines = text.splitlines(keepends=True)
    fastq = text.startswith("@")
    out = []
    for i, line in enumerate(lines):
        is_seq = i % 4 == 1 if fastq else not line.startswith(">")
        out.append(line.translate(str.maketrans("Tt", "Uu")) if is_seq else line)
    return "".join(out)


def run_index(folder: Path, *texts: str, suffix: str = "fa") -> dict[str, Path]:
    """index_sample over ``texts`` (one file each, ``folder``/in_<n>.<suffix>)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, text in enumerate(texts):
        files.append(folder / f"in_{n}.{suffix}")
        files[-1].write_text(text)
    out = {k: folder / f"out.{k}" for k in NAMES}
    index_sample([str(f) for f in files], 500, {k: str(p) for k, p in out.items()})
    return out


def mixed_case_reads() -> str:
    """The demo reads, every third one lower case, plus one read longer than a batch (64 Ki
    bases: it is cut into pieces on its way to the frames)."""
    records = DEMO_READS.read_text().split(">")[1:]
    for i in range(0, len(records), 3):
        head, body = records[i].split("\n", 1)
        records[i] = f"{head}\n{body.lower()}"
    rng = random.Random(7)
    long = "".join(rng.choice("ACGT") for _ in range(70_000))
    wrapped = "\n".join(long[i : i + 80] for i in range(0, len(long), 80))
    return "".join(f">{r}" for r in records) + f">long\n{wrapped}\n"


def fastq_of(fasta: str) -> str:
    return "".join(
        f"@{r.id}\n{r.seq}\n+\n{'I' * len(r.seq)}\n"
        for r in SeqIO.parse(io.StringIO(fasta), "fasta")
    )


@pytest.mark.parametrize("fmt", ["fasta", "fastq"])
def test_rna_reads_give_the_frames_of_their_dna_spelling(tmp_path, fmt):
    dna = mixed_case_reads()
    if fmt == "fastq":
        dna = fastq_of(dna)
    rna = as_rna(dna)
    assert "U" in rna and "u" in rna and rna != dna
    want = run_index(tmp_path / "dna", dna)
    got = run_index(tmp_path / "rna", rna)
    for name in ("frames", "proteins", "index"):
        assert got[name].read_bytes() == want[name].read_bytes(), name
    counts = json.loads(got["counts"].read_text())
    frames = json.loads(want["counts"].read_text())["frames"]
    assert frames > 50 and counts["frames"] == frames
    assert counts["rna_reads"] == 41 and counts["rna_files"] == 1
    assert json.loads(want["counts"].read_text())["rna_reads"] == 0


def test_rna_frames_match_biopython_translating_the_rna(tmp_path):
    """Spot check against an independent translation of the RNA as written."""
    rng = random.Random(3)
    reads = {f"r{i}": "".join(rng.choice("ACGU") for _ in range(rng.randint(30, 480)))
             for i in range(300)}  # fmt: skip
    out = run_index(tmp_path, "".join(f">{k}\n{s}\n" for k, s in reads.items()))
    proteins = list(SeqIO.parse(out["proteins"], "fasta"))
    assert len(proteins) > 20
    for rec in proteins:  # one chunk per read: ids are <read>_chunk_1<frame>
        read, frame = rec.id.rsplit("_chunk_1", 1)
        seq = Seq(reads[read])
        strand = seq if frame[0] == "F" else seq.reverse_complement_rna()
        f = int(frame[1]) - 1
        coding = strand[f : f + (len(seq) - f) // 3 * 3]
        assert str(rec.seq) == str(coding.translate()), rec.id


def test_a_read_with_both_t_and_u_is_refused_naming_it(tmp_path):
    text = ">a\nACGTACGT\n>b d\nACGUAC\nGATTAC\n>c\nUUU\n"
    with pytest.raises(InputError) as err:
        run_index(tmp_path, text)
    message = str(err.value)
    assert message == (
        f"{tmp_path / 'in_0.fa'}: line 3, record 'b': the sequence holds both T (first at base "
        "9) and U (first at base 4): a read is DNA (T) or RNA (U), never both: fix or remove "
        "this read"
    )
    assert not any(tmp_path.glob("out.*"))  # nothing written


def test_dna_and_rna_reads_in_one_file_and_one_warning_per_rna_file(tmp_path, caplog):
    dna = ">d1\nATGAAACCC\n>d2\nttaggg\n"
    rna = ">r1\nAUGAAACCC\n>r2\nuuaggg\n>r3\nACGACG\n"  # r3: no T, no U
    with caplog.at_level(logging.WARNING):
        out = run_index(tmp_path, rna, dna, dna.replace(">d", ">e") + rna.replace(">r", ">s"))
    counts = json.loads(out["counts"].read_text())
    assert (counts["rna_reads"], counts["rna_files"], counts["reads"]) == (4, 2, 10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{str(tmp_path / f'in_{n}.fa')!r}: {k} read(s) written as RNA (U): U read as T, their "
        "frames are those of the DNA spelling (spec: RNA spelling)"
        for n, k in ((0, 2), (2, 2))
    ]
