"""Property tests of the packer and the packed-batch layout against plain loops."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from virnuc_core.engine.packing import make_batch, pack_ffd, pack_stream, segment_mean

FAST = settings(max_examples=60, deadline=None)
lengths_st = st.lists(st.integers(1, 300), min_size=0, max_size=120)
budget_st = st.integers(1, 1200)


def _check_batches(batches_lengths: list[list[int]], budget: int) -> None:
    for lens in batches_lengths:
        assert lens, "no empty batch"
        assert sum(lens) <= budget or len(lens) == 1, (lens, budget)


@FAST
@given(lengths_st, budget_st)
def test_pack_ffd_loses_and_doubles_nothing(lengths, budget):
    batches = pack_ffd(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    _check_batches([[lengths[i] for i in b] for b in batches], budget)


@FAST
@given(lengths_st, budget_st)
def test_pack_ffd_over_long_sequences_stand_alone(lengths, budget):
    for b in pack_ffd(lengths, budget):
        if any(lengths[i] > budget for i in b):
            assert len(b) == 1


@FAST
@given(lengths_st, budget_st, st.one_of(st.none(), st.integers(1, 5000)))
def test_pack_stream_loses_and_doubles_nothing(lengths, budget, buffer_tokens):
    items = [(i, np.zeros(n, dtype=np.int64)) for i, n in enumerate(lengths)]
    batches = list(pack_stream(iter(items), budget, buffer_tokens))
    seen = Counter(rec for batch in batches for rec, _ in batch)
    assert seen == Counter(range(len(lengths)))
    _check_batches([[len(t) for _, t in batch] for batch in batches], budget)


@FAST
@given(st.lists(st.integers(1, 50), min_size=1, max_size=40), st.integers(0, 2**31 - 1))
def test_make_batch_layout_matches_a_loop(lengths, seed):
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(0, 33, n) for n in lengths]
    batch = make_batch(tokens)
    ids, seq_ids, positions, cu = [], [], [], [0]
    for s, t in enumerate(tokens):
        for p, tok in enumerate(t):
            ids.append(tok)
            seq_ids.append(s)
            positions.append(p)
        cu.append(cu[-1] + len(t))
    assert batch.input_ids.dtype == torch.int64 and batch.input_ids.tolist() == ids
    assert batch.seq_ids.tolist() == seq_ids
    assert batch.positions.tolist() == positions
    assert batch.cu_seqlens.dtype == torch.int32 and batch.cu_seqlens.tolist() == cu
    assert batch.max_seqlen == max(lengths)
    assert batch.num_seqs == len(lengths)
    assert batch.lengths().tolist() == lengths


@FAST
@given(
    st.lists(st.integers(1, 30), min_size=1, max_size=30),
    st.integers(1, 8),
    st.integers(0, 2**31 - 1),
)
def test_segment_mean_matches_a_loop(lengths, dim, seed):
    rng = np.random.default_rng(seed)
    batch = make_batch([np.zeros(n, dtype=np.int64) for n in lengths])
    total = sum(lengths)
    values = torch.from_numpy(rng.normal(size=(total, dim))).to(torch.bfloat16)
    weight = torch.from_numpy(rng.random(total) < 0.7)
    got = segment_mean(values, batch.seq_ids, weight, len(lengths))
    assert got.dtype == torch.float32 and got.shape == (len(lengths), dim)
    v, w = values.double(), weight.double()
    start = 0
    for s, n in enumerate(lengths):
        ws = w[start : start + n]
        want = (v[start : start + n] * ws[:, None]).sum(0) / max(ws.sum().item(), 1.0)
        torch.testing.assert_close(got[s].double(), want, rtol=1e-5, atol=1e-6)
        start += n
