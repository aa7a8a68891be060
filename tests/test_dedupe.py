"""Exact-duplicate removal: digests vs plain dict grouping, shard layout, row copies, workflow."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workflow_helpers import DEMO_READS, run_snakemake, write_config
from virnuc_core.dedupe import expand_copies, first_occurrences, shared_groups
from virnuc_core.fasta import FastaRecord, read_index, write_frames
from virnuc_core.shards import read_shard, split_strides, write_shard

SAMPLE = "results/demo"


def write_lines(path, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A FASTA of ``seqs`` (one line each); their byte offsets and lengths."""
    offsets, pos, text = [], 0, []
    for i, s in enumerate(seqs):
        header = f">r{i}\n"
        offsets.append(pos + len(header))
        text.append(header + s + "\n")
        pos += len(header) + len(s) + 1
    path.write_text("".join(text))
    return np.array(offsets), np.array([len(s) for s in seqs])


def plain_first(seqs: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    return [seen.setdefault(s, i) for i, s in enumerate(seqs)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text("ACGT", min_size=1, max_size=6), max_size=60))
def test_first_occurrences_match_a_plain_dict(tmp_path_factory, seqs):
    path = tmp_path_factory.mktemp("dedupe") / "s.fa"
    offsets, lengths = write_lines(path, seqs)
    assert first_occurrences(path, offsets, lengths).tolist() == plain_first(seqs)


def test_first_occurrences_read_only_the_given_spans(tmp_path):
    path = tmp_path / "s.fa"
    offsets, lengths = write_lines(path, ["ACGT", "ACG", "ACGT", "TTT", "ACG"])
    first = first_occurrences(path, offsets[[4, 0, 2, 1]], lengths[[4, 0, 2, 1]])
    assert first.tolist() == [0, 1, 1, 0]  # positions in the given order, not record numbers


def test_split_strides_keeps_copies_with_their_first():
    rng = np.random.default_rng(3)
    n = 2000
    lengths = rng.integers(10, 170, size=n)
    groups = np.arange(n)
    dup = rng.choice(np.arange(100, n), size=400, replace=False)
    groups[dup] = rng.integers(0, 100, size=dup.size)  # copies of the first 100 records
    lengths[dup] = lengths[groups[dup]]
    shards = split_strides(lengths, 4, groups)
    shard_of = np.empty(n, dtype=int)
    for i, recs in enumerate(shards):
        shard_of[recs] = i
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    assert (shard_of == shard_of[groups]).all()
    distinct_work = [lengths[r[groups[r] == r]].sum() for r in shards]
    assert max(distinct_work) - min(distinct_work) < 170
    assert [s.tolist() for s in split_strides(lengths, 4)] == [
        s.tolist() for s in split_strides(lengths, 4, np.arange(n))
    ]


def plain_components(n: int, *sources) -> list[int]:
    """Union-find: each record's smallest linked record."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for src in sources:
        for r, s in enumerate(src.tolist()):
            a, b = sorted((root(r), root(s)))
            parent[b] = a
    return [root(i) for i in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=40))
def test_shared_groups_match_union_find(keys):
    a = np.array(plain_first([str(k) for k, _ in keys]))
    b = np.array(plain_first([str(k) for _, k in keys]))
    assert shared_groups(a, b).tolist() == plain_components(len(keys), a, b)


def test_identical_frames_with_different_proteins_share_a_shard(tmp_path):
    """An N ends a frame's protein early: equal frames, different proteins (F1: KA vs KG)."""
    reads = [FastaRecord("a", "NNNAAAGCC", 1), FastaRecord("b", "NNNAAAGGG", 3)]
    write_frames(iter(reads), 300, tmp_path / "f.fa", tmp_path / "p.faa", tmp_path / "i.tsv")
    t = read_index(tmp_path / "i.tsv")
    nt = first_occurrences(tmp_path / "f.fa", t.nt_offset, t.nt_length)
    aa = first_occurrences(tmp_path / "p.faa", t.aa_offset, t.aa_length)
    assert nt[6] == 0 and aa[6] == 6  # the case itself

    def shards_readable(groups) -> bool:
        for i, recs in enumerate(split_strides(t.aa_length, 12, groups)):
            write_shard(tmp_path / f"s{i}.txt", recs, {"dnabert": nt[recs], "esm": aa[recs]})
            try:
                read_shard(tmp_path / f"s{i}.txt", "dnabert")
            except ValueError:
                return False
        return True

    assert not shards_readable(aa)  # grouping by protein alone splits the frame copies
    assert shards_readable(shared_groups(nt, aa))


def test_shard_file_with_sources(tmp_path):
    path = tmp_path / "shard_0.txt"
    recs = np.array([2, 5, 9])
    write_shard(path, recs, {"dnabert": np.array([2, 5, 9]), "esm": np.array([2, 5, 2])})
    assert path.read_text().splitlines()[0] == "record\tdnabert\tesm"
    assert read_shard(path, "esm")[1].tolist() == [2, 5, 2]
    assert read_shard(path, "dnabert")[1].tolist() == [2, 5, 9]
    write_shard(path, recs, {"esm": np.array([2, 7, 9])})
    with pytest.raises(ValueError, match="not in the shard"):
        read_shard(path, "esm")


def test_expand_copies_matches_a_loop():
    rng = np.random.default_rng(0)
    records = np.array([7, 1, 4, 10])
    rows = rng.normal(size=(4, 3)).astype(np.float32)
    copies, sources = np.array([3, 0, 12]), np.array([4, 10, 4])
    out_records, out_rows = expand_copies(records, rows, copies, sources)
    row_of = {int(r): rows[i] for i, r in enumerate(records)}
    row_of.update({int(c): row_of[int(s)] for c, s in zip(copies, sources, strict=True)})
    assert out_records.tolist() == sorted(row_of)
    np.testing.assert_array_equal(out_rows, np.stack([row_of[r] for r in sorted(row_of)]))
    with pytest.raises(ValueError, match="no embedding"):
        expand_copies(records, rows, np.array([2]), np.array([5]))


@pytest.mark.workflow
def test_workflow_with_duplicates_matches_the_run_without(tmp_path):
    """Reads repeated under new ids: with dedupe every copy gets its first's row exactly, fewer
    sequences are embedded, and the features agree with a run that embeds every frame."""
    text = DEMO_READS.read_text()
    records = [">" + r for r in text.split(">")[1:]]
    copies = [r.replace(">", ">copy_", 1) for r in records[::3]]
    reads = tmp_path / "reads.fa"
    reads.write_text("".join(records + copies))
    features = {}
    for dedupe in (True, False):
        work = tmp_path / f"dedupe_{dedupe}"
        work.mkdir()
        write_config(work, samples={"demo": str(reads)}, dedupe=dedupe)
        run_snakemake(work, f"{SAMPLE}/features.h5")
        with h5py.File(work / SAMPLE / "features.h5") as f:
            features[dedupe] = {m: f[m][()] for m in ("dnabert", "esm")}
            ids = f["ids"].asstr()[()].tolist()
        distinct = []
        for i in range(2):
            with h5py.File(work / SAMPLE / f"embeddings/esm/shard_{i}.h5") as f:
                distinct.append((int(f.attrs["distinct_sequences"]), f["records"].size))
        with h5py.File(work / SAMPLE / "embeddings/esm.h5") as f:
            assert "distinct_sequences" not in f.attrs  # a per-shard count
        if dedupe:
            assert sum(d for d, _ in distinct) < sum(n for _, n in distinct)
        else:
            assert all(d == n for d, n in distinct)
    row = {i: k for k, i in enumerate(ids)}
    copied = [(row[i], row[i.removeprefix("copy_")]) for i in ids if i.startswith("copy_")]
    assert len(copied) > 10
    for model in ("dnabert", "esm"):
        on, off = features[True][model], features[False][model]
        for c, s in copied:
            np.testing.assert_array_equal(on[c], on[s])
        np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-5)
