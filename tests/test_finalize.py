"""finalize_shard (rows -> shard file, copies filled) and features.h5 (shards mapped, no copy)."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from virnuc_core.jobs.finalize import finalize_shard
from virnuc_core.jobs.merge import FeaturesError, feature_blocks, open_features, write_features
from virnuc_core.jobs.store import CorruptRows, ShardCheckpoint
from virnuc_core.util.npyfile import write_npy


def emb_of(records, dim):
    records = np.asarray(records, dtype=np.int64)
    return (records[:, None] * 100.0 + np.arange(dim)[None, :]).astype(np.float32)


def rows_dir(tmp_path, name, lo, hi, records, dim, attrs=None, metrics=None):
    """A finished rows directory holding ``records`` (in a shuffled commit order)."""
    records = np.random.default_rng(lo).permutation(np.asarray(records, np.int64))
    ckpt = ShardCheckpoint.open(tmp_path / f"{name}.work", "fp", dim, lo, hi, every_records=3)
    for part in np.array_split(records, 3):
        ckpt.append(part, emb_of(part, dim))
        ckpt.commit()
    meta = {"attrs": attrs or {"model": "esm", "device": "cpu"}, "metrics": metrics or {}}
    return ckpt.complete(tmp_path / f"{name}.rows", meta)


def sources_file(tmp_path, sources):
    path = tmp_path / "sources.npy"
    with open(path, "wb") as handle:
        write_npy(handle, np.asarray(sources, np.int64))
    return path


def test_shard_file_in_record_order_with_copies_from_earlier_shards(tmp_path):
    dim = 4
    # records 0..9 in three shards [0,3) [3,6) [6,10); 4 copies 1, 7 copies 2 (shard 0),
    # 8 copies 6 (its own shard), 9 copies 3 (shard 1)
    sources = np.arange(10)
    sources[[4, 7, 8, 9]] = [1, 2, 6, 3]
    src = sources_file(tmp_path, sources)
    bounds = [(0, 3), (3, 6), (6, 10)]
    files = []
    for i, (lo, hi) in enumerate(bounds):
        own = [r for r in range(lo, hi) if sources[r] == r]
        rows = rows_dir(tmp_path, f"s{i}", lo, hi, own, dim, metrics={"wall_s": 2.0 + i})
        out = tmp_path / f"shard_{i}.h5"
        earlier = [(*bounds[j], str(files[j])) for j in range(i)]
        finalize_shard(rows, src, earlier, out, block_bytes=2 * 4 * dim)  # 2 rows a block
        files.append(out)
        with h5py.File(out) as h5:
            assert h5["records"][()].tolist() == list(range(lo, hi))
            np.testing.assert_array_equal(h5["embeddings"][()], emb_of(sources[lo:hi], dim))
            assert h5.attrs["distinct_sequences"] == len(own)
            assert h5.attrs["metrics.wall_s"] == 2.0 + i and h5.attrs["model"] == "esm"


def test_missing_rows_and_sources_are_refused(tmp_path):
    src = sources_file(tmp_path, np.arange(4))
    rows = rows_dir(tmp_path, "s", 0, 4, [0, 1, 3], 2)  # record 2 never embedded
    with pytest.raises(ValueError, match=r"no row for records \[2\]"):
        finalize_shard(rows, src, [], tmp_path / "out.h5")
    src = sources_file(tmp_path, [0, 0, 1, 1])
    rows = rows_dir(tmp_path, "t", 2, 4, [], 2)
    with pytest.raises(ValueError, match="no earlier shard"):
        finalize_shard(rows, src, [], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_a_corrupt_row_never_reaches_the_shard_file(tmp_path):
    src = sources_file(tmp_path, np.arange(6))
    rows = rows_dir(tmp_path, "s", 0, 6, range(6), 4)
    with open(rows / "rows.bin", "r+b") as fh:
        fh.seek(30)
        fh.write(b"\xff\xff")
    with pytest.raises(CorruptRows, match="does not match its checksum"):
        finalize_shard(rows, src, [], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def _sample(tmp_path, n, dims, bounds):
    """frames.fa + index for ``n`` frames, and shard files per model cut at ``bounds``."""
    from virnuc_core.data.frames import FrameBatch
    from virnuc_core.data.index import write_index

    ids = [f"r{i}_chunk_1F{1 + i % 3}" for i in range(n)]
    batch = FrameBatch(ids, ["ACGT"] * n, ["M"] * n, n, n, np.arange(n), np.zeros(n, np.int32),
                       np.zeros(n, np.uint8))  # fmt: skip
    base = tmp_path / "results" / "s"
    paths = [base / x for x in ("frames.fa", "proteins.faa", "i.npy")]
    write_index([batch], *paths)
    shards = {}
    for model, dim in dims.items():
        shards[model] = []
        for i, (lo, hi) in enumerate(bounds):
            path = base / "embeddings" / model / f"shard_{i}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as h5:
                h5["records"] = np.arange(lo, hi)
                h5["embeddings"] = emb_of(np.arange(lo, hi), dim) + (dim == 3)
                h5.attrs.update(model=model, records_lo=lo, token_budget=7, precision="fp32")
                h5.attrs["metrics.wall_s"] = 1.0
            shards[model].append(path)
    return ids, paths, shards, base


def test_features_map_the_shards_in_record_order(tmp_path):
    dims = {"dnabert": 3, "esm": 5}
    ids, paths, shards, base = _sample(tmp_path, 11, dims, [(0, 4), (4, 4), (4, 11)])
    out = write_features(shards, paths[2], paths[0], base / "features.h5")
    with open_features(out) as f:
        assert f["ids"].asstr()[()].tolist() == ids
        for model, dim in dims.items():
            assert f[model].is_virtual
            np.testing.assert_array_equal(f[model][()], emb_of(np.arange(11), dim) + (dim == 3))
        assert f.attrs["esm.precision"] == "fp32" and "esm.token_budget" not in f.attrs
        assert not any(k.endswith("wall_s") for k in f.attrs)
        blocks = list(feature_blocks(f, 4))
        assert [(lo, hi) for lo, hi, _ in blocks] == [(0, 4), (4, 8), (8, 11)]
        np.testing.assert_array_equal(
            blocks[1][2], np.concatenate([f["dnabert"][4:8], f["esm"][4:8]], axis=1)
        )
    moved = tmp_path / "elsewhere"
    shutil.move(base, moved)  # the results folder moved as a whole still reads
    with open_features(moved / "features.h5") as f:
        np.testing.assert_array_equal(f["esm"][()], emb_of(np.arange(11), 5))
    (moved / "embeddings/esm/shard_2.h5").unlink()
    with (
        pytest.raises(
            FeaturesError, match=r"esm embeddings are in .*shard_2\.h5, which is missing"
        ),
        open_features(moved / "features.h5"),
    ):
        pass
    with h5py.File(moved / "features.h5") as f:  # read without the check: NaN, never zeros
        assert np.isnan(f["esm"][4:11]).all() and not np.isnan(f["esm"][:4]).any()


def test_features_refuse_shards_that_do_not_cover_the_index(tmp_path):
    _, paths, shards, base = _sample(tmp_path, 6, {"dnabert": 3, "esm": 5}, [(0, 2), (2, 6)])
    with pytest.raises(FeaturesError, match="shards hold 2 rows"):
        write_features({"esm": shards["esm"][:1]}, paths[2], paths[0], base / "f.h5")
    with pytest.raises(FeaturesError, match="starts at record 2, expected 0"):
        write_features({"esm": shards["esm"][1:]}, paths[2], paths[0], base / "f.h5")
    assert not (base / "f.h5").exists()


def test_a_source_pointing_forward_is_refused(tmp_path):
    # record 1 names record 2, a later one, as its source: not a plan's sources
    src = sources_file(tmp_path, [0, 2, 2, 3])
    rows = rows_dir(tmp_path, "s", 0, 4, [0, 2, 3], 2)
    with pytest.raises(ValueError, match=r"sources\.npy: sources of records 0\.\.3 are not valid"):
        finalize_shard(rows, src, [], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_a_source_at_an_earlier_shards_upper_bound_is_refused(tmp_path):
    # shards [0,2) [2,4) [4,6); record 5 copies record 2, which is in shard 1, not shard 0
    dim = 3
    sources = [0, 1, 2, 3, 4, 2]
    src = sources_file(tmp_path, sources)
    first = finalize_shard(rows_dir(tmp_path, "s0", 0, 2, [0, 1], dim), src, [],
                           tmp_path / "shard_0.h5")  # fmt: skip
    rows = rows_dir(tmp_path, "s2", 4, 6, [4], dim)
    # given shard 0 only: record 2 lies at its upper bound, outside it
    with pytest.raises(ValueError, match="copies whose source is in no earlier shard given"):
        finalize_shard(rows, src, [(0, 2, str(first))], tmp_path / "shard_2.h5")
    assert not (tmp_path / "shard_2.h5").exists()
