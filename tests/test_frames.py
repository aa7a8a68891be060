"""Chunking and six-frame selection: bit-exact with the original (golden files) and with a plain
per-codon implementation of spec §1-2 written here (Biopython's codon table)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO
from Bio.Data import CodonTable
from hypothesis import given, settings
from hypothesis import strategies as st

from virnuc_core.data.frames import (
    CODON_TABLE,
    chunk_bounds,
    chunk_sequence,
    iter_frame_batches,
    select_frames,
)
from virnuc_core.data.reads import iter_reads

DEMO_READS = Path(__file__).resolve().parents[1] / "config" / "demo" / "reads.fa"

_STANDARD = CodonTable.unambiguous_dna_by_id[1]
BIO_TABLE = {**_STANDARD.forward_table, **dict.fromkeys(_STANDARD.stop_codons, "*")}
_COMP = str.maketrans("ACGT", "TGCA")


# -- the spec, written out plainly ------------------------------------------------------------


def reference_chunks(record_id: str, seq: str, size: int) -> list[tuple[str, str]]:
    """Spec §1 as written: n chunks, the first x steps floor(r/n)+1, the rest floor(r/n), last 0."""
    n = -(-len(seq) // size)
    r = n * size - len(seq)
    x = r - (n - 1) * (r // n)
    steps = [r // n + 1] * x + [r // n] * (n - 1 - x) + [0]
    out, back = [], 0
    for k in range(n):
        start = k * size - back
        out.append((f"{record_id}_chunk_{k + 1}", seq[start : start + size]))
        back += steps[k]
    return out


def reference_frames(chunk_id: str, chunk: str) -> list[tuple[str, str, str]]:
    """Spec §2 codon by codon: (frame id, nucleotides, protein) of each kept frame."""
    chunk = chunk.upper()
    rc = chunk.translate(_COMP)[::-1]
    out = []
    for label, strand, k in [("F", chunk, 1), ("F", chunk, 2), ("F", chunk, 3),
                             ("R", rc, 1), ("R", rc, 2), ("R", rc, 3)]:  # fmt: skip
        codons = [strand[i : i + 3] for i in range(k - 1, len(strand) - 2, 3)]
        protein = "".join(BIO_TABLE.get(c, "") for c in codons)
        if protein and "*" not in protein:
            out.append((f"{chunk_id}{label}{k}", strand[k - 1 : k + 3 * len(protein)], protein))
    return out


def reference(records, size):
    return [
        frame
        for rid, seq in records
        for cid, chunk in reference_chunks(rid, seq, size)
        for frame in reference_frames(cid, chunk)
    ]


def ours(records, size, batch_bases=1 << 20):
    out = []
    for batch in iter_frame_batches(records, size, batch_bases):
        out += zip(batch.ids, batch.nucleotides, batch.proteins, strict=True)
    return out


class Rec:
    def __init__(self, rid, seq):
        self.id, self.seq = rid, seq


def assert_same_records(got, want, what):
    """Record for record, naming the first difference."""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert g == w, f"{what}: record {i} differs:\n  got  {g}\n  want {w}"
    assert len(got) == len(want), f"{what}: {len(got)} records, want {len(want)}"


def parse(path):
    return [(r.id, str(r.seq)) for r in SeqIO.parse(path, "fasta")]


# -- golden files ----------------------------------------------------------------------------


def test_codon_table_is_the_standard_code():
    assert CODON_TABLE == BIO_TABLE


def test_golden_input_has_the_hard_cases(golden_dir):
    seqs = "".join(r.seq for r in iter_reads(golden_dir / "input.fa"))
    assert any(c.islower() for c in seqs)
    assert set("NRYKM") <= set(seqs.upper())


@pytest.mark.parametrize("size", [300, 500])
def test_chunks_match_golden(golden_dir, size):
    got = [
        c for r in iter_reads(golden_dir / "input.fa") for c in chunk_sequence(r.id, r.seq, size)
    ]
    assert_same_records(got, parse(golden_dir / f"chunked{size}.fa"), f"chunked{size}.fa")


@pytest.mark.parametrize("size", [300, 500])
@pytest.mark.parametrize("batch_bases", [1 << 20, 700])  # 700: many batches, long records split
def test_frames_match_golden(golden_dir, size, batch_bases):
    got = ours(iter_reads(golden_dir / "input.fa"), size, batch_bases)
    nucleotides = parse(golden_dir / f"identified_nucleotide{size}.fa")
    proteins = parse(golden_dir / f"identified_protein{size}.faa")
    assert_same_records([(i, n) for i, n, _ in got], nucleotides, f"identified_nucleotide{size}.fa")
    assert_same_records([(i, p) for i, _, p in got], proteins, f"identified_protein{size}.faa")


# -- against the plain implementation ---------------------------------------------------------

# Mostly ACGT (so that stop-free frames are common), some lower case, ambiguity codes and U.
BASES = st.sampled_from("ACGTACGTACGTACGTacgtNNRYSWKMBDHVUnry")
SEQS = st.text(BASES, min_size=1, max_size=150)


@settings(max_examples=300, deadline=None)
@given(
    seqs=st.lists(SEQS, min_size=1, max_size=6),
    size=st.integers(1, 90),
    batch_bases=st.integers(1, 400),
)
def test_matches_plain_per_codon_implementation(seqs, size, batch_bases):
    records = [(f"r{i}", s) for i, s in enumerate(seqs)]
    want = reference(records, size)
    assert ours([Rec(*r) for r in records], size, batch_bases) == want
    assert [c for r in records for c in chunk_sequence(*r, size)] == [
        c for r in records for c in reference_chunks(*r, size)
    ]


def test_demo_reads_match_with_many_frames_kept():
    """The demo reads include reads with all six frames open: the heaviest path (many kept)."""
    records = [(r.id, r.seq) for r in iter_reads(DEMO_READS)]
    for size in (300, 500):
        got = ours([Rec(*r) for r in records], size)
        assert got == reference(records, size)
        assert len(got) > 2 * len(records)


def test_select_frames_counts():
    batch = select_frames(["a", "b"], ["ATG" * 200, "ATGAAA"], 500)
    assert (batch.records, batch.chunks) == (2, 3)
    assert batch.ids[:1] == ["a_chunk_1F1"]
    assert batch.proteins[0] == "M" * 166  # 500 bases: 166 codons, the slice is 499 bases
    assert batch.nucleotides[0] == ("ATG" * 200)[:499]


@pytest.mark.parametrize("length", range(1, 8))
def test_tiny_records(length):
    seq = "ATGGCA"[:length] + "C" * max(0, length - 6)
    records = [("t", seq)]
    assert ours([Rec(*r) for r in records], 500) == reference(records, 500)


def test_chunk_bounds_vectorised_equals_spec():
    lengths = np.arange(1, 2000, 7)
    for size in (3, 300, 500):
        record, k, start, end = chunk_bounds(lengths, size)
        got = list(zip(record.tolist(), k.tolist(), start.tolist(), end.tolist(), strict=True))
        want = []
        for i, n in enumerate(lengths.tolist()):
            seq = "".join(map(chr, range(n)))  # every position distinct: chunks give their bounds
            for j, (_, chunk) in enumerate(reference_chunks("x", seq, size)):
                want.append((i, j, ord(chunk[0]), ord(chunk[-1]) + 1))
        assert got == want


def test_chunk_length_checked():
    with pytest.raises(ValueError, match="chunk_length"):
        select_frames(["a"], ["ACGT"], 0)
    with pytest.raises(ValueError, match="at least one base"):
        chunk_bounds(np.array([5, 0]), 300)


def test_last_chunk_shorter_than_length_quirk():
    """Spec §1 arithmetic as the original had it: 500 bases at L=300 give chunks 0-300, 249-500."""
    assert [len(c) for _, c in chunk_sequence("r", "A" * 500, 300)] == [300, 251]


def test_iter_frame_batches_is_lazy():
    def records():
        yield Rec("a", "ATG" * 100)
        raise RuntimeError("read too far")

    batches = iter_frame_batches(records(), 300, batch_bases=100)
    assert next(batches).ids[0] == "a_chunk_1F1"
    with pytest.raises(RuntimeError):
        next(batches)


def test_all_frame_labels_reachable():
    """An all-six-open read keeps F1..R3 in that order."""
    seq = "".join(itertools.islice(itertools.cycle("GCC"), 90))  # GCC / CCG / CGC, rc GGC...
    got = [i[-2:] for i, _, _ in ours([Rec("o", seq)], 300)]
    assert got == ["F1", "F2", "F3", "R1", "R2", "R3"]
