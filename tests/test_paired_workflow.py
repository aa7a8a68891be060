"""A real paired-end run (issue 35): the HNSCC1 Illumina HiSeq pair of ../shared/data/real
(Casava 1.8 headers: mates share the first word) through the whole workflow with the demo's
tiny models, given as a sample sheet (sample, fastq_1, fastq_2); the same sample in the config
mapping's {r1, r2} form is the same sample (nothing to redo). Every mate is a read of its own,
``<pair>/1`` then ``<pair>/2``, and pairs.tsv takes each pair's two rows together."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.workflow_helpers import run_snakemake, write_config

pytestmark = pytest.mark.workflow
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
PAIRS = 30  # of the pair's 100: the run stays short


def first_records(src: Path, dst: Path, n: int) -> list[str]:
    """Copy the first ``n`` FASTQ records; return their ids (first word of the header)."""
    lines = src.read_text().splitlines()[: 4 * n]
    dst.write_text("\n".join(lines) + "\n")
    return [h[1:].split()[0] for h in lines[0::4]]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory) -> tuple[Path, list[str]]:
    work = tmp_path_factory.mktemp("paired")
    if not (REAL / "HNSCC1_R1.fastq").is_file():
        pytest.fail(
            f"{REAL} not found: the tests need the project's shared/ folder beside the repo"
        )
    ids1 = first_records(REAL / "HNSCC1_R1.fastq", work / "R1.fastq", PAIRS)
    ids2 = first_records(REAL / "HNSCC1_R2.fastq", work / "R2.fastq", PAIRS)
    assert ids1 == ids2  # Casava 1.8: the duplicate ids the workflow used to refuse
    sheet = work / "samples.tsv"
    sheet.write_text(f"sample\tfastq_1\tfastq_2\nhnscc\t{work / 'R1.fastq'}\t{work / 'R2.fastq'}\n")
    write_config(work, samples=str(sheet), chunk_length=300)
    run_snakemake(work)
    return work, ids1


def test_every_mate_is_a_read_of_its_own_in_input_order(paired_run):
    work, ids = paired_run
    summary = rows(work / "results/hnscc/summary.tsv")
    assert [r["read_id"] for r in summary] == [f"{i}/{m}" for i in ids for m in (1, 2)]
    assert {r["length"] for r in summary} == {"101"}


def test_pairs_tsv_takes_each_pair_s_mates_together(paired_run):
    work, ids = paired_run
    summary = rows(work / "results/hnscc/summary.tsv")
    pairs = rows(work / "results/hnscc/pairs.tsv")
    assert [p["pair_id"] for p in pairs] == ids
    for pair, one, two in zip(pairs, summary[0::2], summary[1::2], strict=True):
        mates = [one["viral"], two["viral"]].count("True")
        scores = [float(m["max_virus_score"]) for m in (one, two) if m["max_virus_score"] != "NA"]
        assert pair["viral_mates"] == str(mates)
        assert pair["viral"] == str(mates > 0)
        if scores:
            assert float(pair["max_virus_score"]) == max(scores)
        else:
            assert pair["max_virus_score"] == "NA"
    # the tiny classifier's calls vary: pairs with one and with two viral mates, and mates
    # without a kept frame (NA) beside a scored one
    assert {p["viral_mates"] for p in pairs} >= {"1", "2"}
    assert "NA" in {r["max_virus_score"] for r in summary}


def test_the_mapping_form_is_the_same_sample(paired_run):
    work, _ = paired_run
    mapping = {"hnscc": {"r1": str(work / "R1.fastq"), "r2": str(work / "R2.fastq")}}
    write_config(work, samples=mapping, chunk_length=300)
    out = run_snakemake(work, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr
    # a single-end sample of the same two files is another sample: its index is made again
    single = {"hnscc": [str(work / "R1.fastq"), str(work / "R2.fastq")]}
    write_config(work, samples=single, chunk_length=300)
    out = run_snakemake(work, "-n", "--rerun-triggers", "params")
    assert "index_fasta" in out.stdout
