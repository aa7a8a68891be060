"""Exact-duplicate removal: digests vs plain dict grouping, and the workflow end to end."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workflow_helpers import DEMO_READS, run_snakemake, write_config
from virnuc_core.data.dedupe import first_occurrences

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
@given(st.lists(st.text("ACGT", min_size=1, max_size=6), max_size=60), st.integers(1, 64))
def test_first_occurrences_match_a_plain_dict(tmp_path_factory, seqs, block_bytes):
    path = tmp_path_factory.mktemp("dedupe") / "s.fa"
    offsets, lengths = write_lines(path, seqs)
    got = first_occurrences(path, offsets, lengths, block_bytes=block_bytes)
    assert got.tolist() == plain_first(seqs)


def test_first_occurrences_read_only_the_given_spans(tmp_path):
    path = tmp_path / "s.fa"
    offsets, lengths = write_lines(path, ["ACGT", "ACG", "ACGT", "TTT", "ACG"])
    pick = [0, 2, 4]  # "ACGT", "ACGT", "ACG": the other lines are never read
    assert first_occurrences(path, offsets[pick], lengths[pick]).tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match="ascend"):
        first_occurrences(path, offsets[[2, 0]], lengths[[2, 0]])


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
        write_config(work, samples={"demo": str(reads)}, dedupe=dedupe, shards=3)
        run_snakemake(work, f"{SAMPLE}/features.h5")
        with h5py.File(work / SAMPLE / "features.h5") as f:
            features[dedupe] = {m: f[m][()] for m in ("dnabert", "esm")}
            ids = f["ids"].asstr()[()].tolist()
        distinct = []
        for i in range(3):
            with h5py.File(work / SAMPLE / f"embeddings/esm/shard_{i}.h5") as f:
                distinct.append((int(f.attrs["distinct_sequences"]), f["records"].size))
        if dedupe:
            assert sum(d for d, _ in distinct) < sum(n for _, n in distinct)
            assert distinct[-1][0] < distinct[-1][1]  # the last shard copies from earlier ones
        else:
            assert all(d == n for d, n in distinct)
        assert not list((work / SAMPLE / "embeddings").glob("*/*.rows"))  # temporary: gone
    row = {i: k for k, i in enumerate(ids)}
    copied = [(row[i], row[i.removeprefix("copy_")]) for i in ids if i.startswith("copy_")]
    assert len(copied) > 10
    for model in ("dnabert", "esm"):
        on, off = features[True][model], features[False][model]
        for c, s in copied:
            np.testing.assert_array_equal(on[c], on[s])
        np.testing.assert_allclose(on, off, rtol=1e-4, atol=1e-5)
