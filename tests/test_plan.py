"""The shard plan: contiguous ranges of equal distinct work; sources point backwards."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnuc_core.data.frames import FrameBatch, iter_frame_batches
from virnuc_core.data.index import write_index
from virnuc_core.data.reads import iter_reads
from virnuc_core.jobs.plan import model_plan, plan_model, plan_shards, read_plan, shard_bounds
from virnuc_core.util.npyfile import NpyReader


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=80), st.integers(1, 9))
def test_bounds_cover_every_record_once_and_balance(weights, n):
    bounds = shard_bounds(np.array(weights, np.int64), n)
    assert bounds[0] == 0 and bounds[-1] == len(weights) and len(bounds) == n + 1
    assert (np.diff(bounds) >= 0).all()
    sums = [sum(weights[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    # each shard within one record's weight of an equal share, as a greedy cut allows
    share, heaviest = sum(weights) / n, max(weights, default=0)
    assert all(s <= share + heaviest for s in sums)


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        shard_bounds(np.array([1]), 0)
    assert shard_bounds(np.array([], np.int64), 3).tolist() == [0, 0, 0, 0]


def test_plan_of_a_sample_with_repeats(tmp_path):
    unit = ">a\n" + "ATGAAACCCGGG" * 30 + "\n>b\n" + "ATGCCC" * 50 + "\n"
    reads = tmp_path / "r.fa"
    reads.write_text(unit + unit.replace(">a", ">a2").replace(">b", ">b2") + ">c\nATG\n")
    paths = [tmp_path / n for n in ("f.fa", "p.faa", "i.npy")]
    write_index(iter_frame_batches(iter_reads(reads), 500), *paths)
    sources = {m: tmp_path / f"{m}.npy" for m in ("dnabert", "esm")}
    seqs = {"dnabert": paths[0], "esm": paths[1]}
    for dedupe in (True, False):
        plan_shards(paths[2], seqs, 3, dedupe, tmp_path / "plan.json", sources)
        doc = read_plan(tmp_path / "plan.json")
        assert doc["frames"] == NpyReader(paths[2]).rows and doc["dedupe"] is dedupe
        for model in seqs:
            src = np.load(sources[model])
            records = np.arange(src.size)
            assert (src <= records).all()  # a copy's source always comes first
            plan = model_plan(doc, model)
            assert plan.bounds[0] == 0 and plan.bounds[-1] == src.size
            assert sum(plan.distinct) == int((src == records).sum())
            if dedupe:  # the second unit (reads 2, 3) repeats the first frame for frame
                read = NpyReader(paths[2]).column("read")
                first, second = records[read < 2], records[(read >= 2) & (read < 4)]
                assert src[second].tolist() == src[first].tolist() == first.tolist()
            else:
                assert src.tolist() == records.tolist()


@pytest.mark.parametrize(
    "weights, n, want",
    [
        ([5, 5, 5, 5], 2, [0, 2, 4]),  # four equal records over two shards: two and two
        ([1] * 6, 3, [0, 2, 4, 6]),
        ([1, 1, 1, 1], 4, [0, 1, 2, 3, 4]),
        ([3, 1, 1, 1], 2, [0, 1, 4]),  # the heavy record alone is half the work
        ([1, 1, 1, 3], 2, [0, 3, 4]),
        ([7], 3, [0, 1, 1, 1]),  # fewer records than shards: the later shards are empty
    ],
)
def test_exact_cut_positions(weights, n, want):
    assert shard_bounds(np.array(weights, np.int64), n).tolist() == want


def _esm_sample(tmp_path, proteins, name="s"):
    """An index whose records have these proteins (the frames' nucleotides are unused here)."""
    n = len(proteins)
    batch = FrameBatch([f"r{i}_chunk_1F1" for i in range(n)], ["ACG" * len(p) for p in proteins],
                       list(proteins), n, n, np.arange(n), np.zeros(n, np.int32),
                       np.zeros(n, np.uint8))  # fmt: skip
    paths = [tmp_path / f"{name}.{x}" for x in ("fa", "faa", "npy")]
    write_index([batch], *paths)
    return paths[1], paths[2]


# ESM-2's cost is the protein's length + 2 (BOS, EOS): a 10-residue protein costs 12 tokens
A, B, C, D = "M" * 10, "K" * 30, "W" * 10, "Y" * 10


def test_copies_are_no_work_in_the_cuts_or_the_planned_tokens(tmp_path):
    # records a a a a b c d: four distinct proteins of 12 tokens, three copies of the first
    faa, index = _esm_sample(tmp_path, [A, A, A, A, C, C.replace("W", "Q"), D])
    plan, sources = plan_model("esm", faa, index, 2, dedupe=True)
    assert sources.tolist() == [0, 0, 0, 0, 4, 5, 6]
    # 48 distinct tokens, 24 a shard: shard 0 is a + its copies + the next distinct record
    assert plan.bounds == [0, 5, 7]
    assert plan.distinct == [2, 2] and plan.tokens == [24, 24]
    plan, _ = plan_model("esm", faa, index, 2, dedupe=False)  # without dedupe, all are work
    assert plan.bounds == [0, 4, 7] and plan.distinct == [4, 3] and plan.tokens == [48, 36]


def test_repeats_plan_the_same_distinct_work_per_shard(tmp_path):
    faa, index = _esm_sample(tmp_path, [A, B, C, D], "plain")
    plain, _ = plan_model("esm", faa, index, 2, dedupe=True)
    assert plain.bounds == [0, 2, 4] and plain.distinct == [2, 2] and plain.tokens == [44, 24]
    faa, index = _esm_sample(tmp_path, [A, A, B, A, B, C, A, D, D, D], "repeats")
    again, sources = plan_model("esm", faa, index, 2, dedupe=True)
    assert sources.tolist() == [0, 0, 2, 0, 2, 5, 0, 7, 7, 7]
    assert again.bounds == [0, 3, 10]  # cut after the record that reaches half the work
    assert (again.distinct, again.tokens) == (plain.distinct, plain.tokens)
