"""merge_shards and write_features."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from virnuc_core.merge import merge_shards, write_features
from virnuc_core.store import ShardCheckpoint


def emb_of(records, dim):
    records = np.asarray(records, dtype=np.int64)
    return (records[:, None] * 100.0 + np.arange(dim)[None, :]).astype(np.float32)


def make_shard(path, records, dim=4, attrs=None):
    rng = np.random.default_rng(len(records))
    records = rng.permutation(np.asarray(records, dtype=np.int64))
    with ShardCheckpoint.open(path.with_suffix(".work"), "fp", dim) as ckpt:
        ckpt.append(records, emb_of(records, dim))
        ckpt.finalize(path, attrs or {"model": "esm"})
    return path


def ids_of(n):
    return [f"contig_{i}|ñ" for i in range(n)]


@pytest.mark.parametrize("block_bytes", [16, 1 << 20])  # 1 row per block, and one block
def test_merge_round_robin_shards(tmp_path, block_bytes):
    n = 23
    shards = [make_shard(tmp_path / f"s{k}.h5", range(k, n, 3)) for k in range(3)]
    out = merge_shards(
        shards,
        n,
        tmp_path / "m" / "esm.h5",
        ids_of(n),
        {"model": "esm", "n": n},
        block_bytes=block_bytes,
    )
    with h5py.File(out, "r") as h5:
        assert h5["ids"].asstr()[()].tolist() == ids_of(n)
        assert h5["embeddings"].dtype == np.float32
        np.testing.assert_array_equal(h5["embeddings"][()], emb_of(range(n), 4))
        assert dict(h5.attrs) == {"model": "esm", "n": n}
    assert not list((tmp_path / "m").glob(".*"))


def test_merge_reports_missing_and_duplicates(tmp_path):
    a = make_shard(tmp_path / "a.h5", [0, 1, 2, 3])
    b = make_shard(tmp_path / "b.h5", [3, 4, 6, 11])
    out = tmp_path / "esm.h5"
    with pytest.raises(ValueError) as err:
        merge_shards([a, b], 8, out, ids_of(8), {})
    msg = str(err.value)
    assert "2 missing (e.g. [5, 7])" in msg
    assert "1 present more than once (e.g. [3])" in msg
    assert "1 out of range 0..7 (e.g. [11])" in msg
    assert not out.exists()


def test_merge_rejects_mixed_settings(tmp_path):
    a = make_shard(tmp_path / "a.h5", [0, 1], attrs={"fingerprint": "x"})
    b = make_shard(tmp_path / "b.h5", [2], attrs={"fingerprint": "y"})
    with pytest.raises(ValueError, match="different settings"):
        merge_shards([a, b], 3, tmp_path / "o.h5", ids_of(3), {})
    c = make_shard(tmp_path / "c.h5", [2], dim=5)
    d = make_shard(tmp_path / "d.h5", [0, 1])
    with pytest.raises(ValueError, match="dim"):
        merge_shards([d, c], 3, tmp_path / "o.h5", ids_of(3), {})


def test_write_features(tmp_path):
    n = 9
    dna = merge_shards(
        [make_shard(tmp_path / "d.h5", range(n), dim=3)],
        n,
        tmp_path / "dnabert.h5",
        ids_of(n),
        {"model": "dnabert", "precision": "bf16"},
    )
    esm = merge_shards(
        [make_shard(tmp_path / "e.h5", range(n), dim=5)],
        n,
        tmp_path / "esm.h5",
        ids_of(n),
        {"model": "esm", "repr_layer": 33},
    )
    out = write_features(dna, esm, tmp_path / "features.h5", block_bytes=8)
    with h5py.File(out, "r") as h5:
        assert h5["ids"].asstr()[()].tolist() == ids_of(n)
        np.testing.assert_array_equal(h5["dnabert"][()], emb_of(range(n), 3))
        np.testing.assert_array_equal(h5["esm"][()], emb_of(range(n), 5))
        assert h5.attrs["dnabert.model"] == "dnabert"
        assert h5.attrs["dnabert.precision"] == "bf16"
        assert h5.attrs["esm.repr_layer"] == 33

    bad_ids = ids_of(n)
    bad_ids[4] = "other"
    esm2 = merge_shards(
        [make_shard(tmp_path / "e2.h5", range(n), dim=5)], n, tmp_path / "esm2.h5", bad_ids, {}
    )
    with pytest.raises(ValueError, match="1 ids differ.*index 4"):
        write_features(dna, esm2, tmp_path / "features2.h5")
    assert not (tmp_path / "features2.h5").exists()
