"""The shard plan: contiguous ranges of equal distinct work; sources point backwards."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virnuc_core.frames import iter_frame_batches
from virnuc_core.index import write_index
from virnuc_core.npyfile import NpyReader
from virnuc_core.plan import model_plan, plan_shards, read_plan, shard_bounds
from virnuc_core.reads import iter_reads


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
