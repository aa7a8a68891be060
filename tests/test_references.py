"""Validation references made by the embed jobs: the rows, their reuse, and what is not trusted.

The rows an embed job makes must equal the reference path of a separately loaded encoder (the
old validation job's way); a reference file that fails its checksum or belongs to other
settings is not used, and the validation job computes those rows itself.
"""

from __future__ import annotations

import logging
import os
import types

import h5py
import numpy as np
import pytest

from virnuc_core.engine.models import esm2
from virnuc_core.jobs.references import gather, shard_reference
from virnuc_core.jobs.validate import cosine_rows

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "MLSDEDFKAVFGMTRSAFANLPLWKQQNLKKEKGLF", "MA", "MKVLAAGIVG"]


class Shard(types.SimpleNamespace):
    """The fields of ShardInput that shard_reference reads."""


@pytest.fixture
def tiny_shard(tmp_path, monkeypatch):
    """A shard of records 10..14 whose sampled records are 11 and 13 (SEQS[1], SEQS[3])."""
    from virnuc_core.jobs import references

    by_record = {10 + i: s for i, s in enumerate(SEQS)}
    monkeypatch.setattr(
        references, "sample_sequences",
        lambda index, sequences, model, records: ([by_record[r] for r in records.tolist()], None),
    )  # fmt: skip
    return Shard(lo=10, hi=14, digest="d1", index="-", sequences="-", model="esm")


def test_the_embed_jobs_rows_equal_a_separately_loaded_reference(tiny_shard, tmp_path):
    enc = esm2.load("tiny", keep_reference=True)
    path = str(tmp_path / "ref.h5")
    shard_reference(enc, tiny_shard, np.array([3, 11, 13, 20]), "fp", path, {"encoder.x": 1})
    with h5py.File(path) as f:
        assert f["records"][()].tolist() == [11, 13]
        rows = f["embeddings"][()]
    want = esm2.load("tiny").reference_embed([SEQS[1], SEQS[3]])  # a fresh build, as before
    np.testing.assert_allclose(rows, want, rtol=1e-6, atol=1e-7)
    found, got, attrs = gather([path], ["fp"], np.array([5, 11, 13]), enc.dim)
    assert found.tolist() == [False, True, True] and attrs == {"encoder.x": 1}
    np.testing.assert_array_equal(got[1:], rows)
    assert not got[0].any()


def test_release_reference_packs_then_drops_the_fair_model_and_the_paths_still_agree():
    enc = esm2.load("tiny", keep_reference=True)
    before = enc.reference_embed(SEQS)
    assert enc._model is None  # not packed while only the reference path ran
    enc.release_reference()
    assert enc._reference is None and enc._model is not None
    fast = enc.embed(SEQS)
    assert cosine_rows(fast, before).min() > 0.99999
    np.testing.assert_allclose(enc.reference_embed(SEQS), before, rtol=1e-6, atol=1e-7)


def test_a_reference_file_is_kept_only_for_the_same_inputs(tiny_shard, tmp_path):
    enc = esm2.load("tiny", keep_reference=True)
    path = str(tmp_path / "ref.h5")
    sample = np.array([11, 13])
    shard_reference(enc, tiny_shard, sample, "fp", path, {})
    os.utime(path, (1, 1))
    shard_reference(enc, tiny_shard, sample, "fp", path, {})  # resumed job: same inputs, kept
    assert os.stat(path).st_mtime == 1
    shard_reference(enc, tiny_shard, sample, "other", path, {})  # other settings: made again
    assert os.stat(path).st_mtime != 1
    with h5py.File(path) as f:
        assert f.attrs["settings_fingerprint"] == "other"


def test_a_tampered_or_foreign_reference_is_not_used(tiny_shard, tmp_path, caplog):
    enc = esm2.load("tiny", keep_reference=True)
    a, b = str(tmp_path / "a.h5"), str(tmp_path / "b.h5")
    shard_reference(enc, tiny_shard, np.array([11]), "fp", a, {})
    shard_reference(enc, Shard(**{**vars(tiny_shard), "lo": 13}), np.array([13]), "fp", b, {})
    records = np.array([11, 13])
    with caplog.at_level(logging.WARNING, "virnuc.references"):
        found, _, _ = gather([a, b], ["fp", "not-its-shard"], records, enc.dim)
    assert found.tolist() == [True, False] and "other settings or weights" in caplog.text
    with h5py.File(a, "r+") as f:
        f["embeddings"][0, 0] += 1.0  # one changed value: the checksum no longer matches
    caplog.clear()
    with caplog.at_level(logging.WARNING, "virnuc.references"):
        found, _, _ = gather([a, b], ["fp", "fp"], records, enc.dim)
    assert found.tolist() == [False, True] and "fails its checksum" in caplog.text
    found, _, _ = gather([str(tmp_path / "missing.h5")], ["fp"], records, enc.dim)
    assert not found.any()
