"""A damaged shard file is refused, never read as other values (issue 34, item 2).

The shard files are made by finalize_shard at the real models' widths (768 DNABERT-S, 2560
ESM-2: chunks of 42 and 12 rows), mapped into features.h5, and read by the predict step (as
scripts/predict.py runs it) and by validation (shard_rows)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from tests.test_finalize import emb_of, rows_dir, sources_file
from virnuc_core.jobs.finalize import finalize_shard
from virnuc_core.jobs.merge import FeaturesError, shard_rows, write_features
from virnuc_core.jobs.step import run_step
from virnuc_core.report.predictions import predict_sample

DIMS = {"dnabert": 768, "esm": 2560}
N, BOUNDS = 500, [(0, 200), (200, 500)]
COPY = (201, 2)  # frame 201 holds the same sequence as frame 2 (shard 0): its row is a copy


def sample(tmp_path: Path) -> SimpleNamespace:
    """frames.fa + index of N frames; per model, shard files made by finalize_shard; and
    features.h5 mapping them."""
    from virnuc_core.data.frames import FrameBatch
    from virnuc_core.data.index import write_index

    ids = [f"r{i // 6}_chunk_1F{1 + i % 6}" for i in range(N)]
    batch = FrameBatch(ids, ["ACGT"] * N, ["M"] * N, N, N, np.arange(N), np.zeros(N, np.int32),
                       np.zeros(N, np.uint8))  # fmt: skip
    base = tmp_path / "results" / "s"
    fa, faa, index = (base / x for x in ("frames.fa", "proteins.faa", "i.npy"))
    write_index([batch], fa, faa, index)
    sources = np.arange(N)
    sources[COPY[0]] = COPY[1]
    src = sources_file(tmp_path, sources)
    shards = {}
    for model, dim in DIMS.items():
        shards[model] = []
        for i, (lo, hi) in enumerate(BOUNDS):
            own = [r for r in range(lo, hi) if sources[r] == r]
            rows = rows_dir(tmp_path, f"{model}{i}", lo, hi, own, dim, attrs={"model": model})
            out = base / "embeddings" / model / f"shard_{i}.h5"
            earlier = [(*BOUNDS[j], str(shards[model][j])) for j in range(i)]
            finalize_shard(rows, src, earlier, out)
            shards[model].append(out)
    features = write_features(shards, index, fa, base / "features.h5")
    return SimpleNamespace(base=base, shards=shards, features=features, sources=src)


def predict(s: SimpleNamespace, tmp_path: Path, capsys) -> tuple[int, str]:
    """The predict step as scripts/predict.py runs it: (exit code, console)."""
    out = {"frames": s.base / "prediction_results.tsv", "chunks": s.base / "highest.tsv"}
    sm = SimpleNamespace(rule="predict", log=[str(tmp_path / "predict.log")], threads=1)

    def main(_) -> None:
        predict_sample(s.features, "tiny", out["frames"], out["chunks"])

    with pytest.raises(SystemExit) as stop:
        run_step(sm, main)
    assert stop.value.code != 0 or all(p.exists() for p in out.values())
    return stop.value.code, capsys.readouterr().err


def test_undamaged_sample_predicts(tmp_path, capsys):
    s = sample(tmp_path)
    assert predict(s, tmp_path, capsys)[0] == 0
    with h5py.File(s.shards["esm"][1]) as h5:  # the copy took its source's row
        np.testing.assert_array_equal(h5["embeddings"][COPY[0] - 200], emb_of([COPY[1]], 2560)[0])


def test_one_flipped_byte_in_a_shard_file_is_refused_naming_the_file(tmp_path, capsys):
    s = sample(tmp_path)
    shard = s.shards["esm"][1]
    with h5py.File(shard) as h5:
        chunk, after = (h5["embeddings"].id.get_chunk_info(k) for k in (1, 2))
    first, last = 200 + chunk.chunk_offset[0], 200 + after.chunk_offset[0] - 1
    data = bytearray(shard.read_bytes())
    # The high byte of the chunk's sixth float: 0x46 -> 0x56, a finite value 2**32 times larger
    # (as a flipped byte turned a score into "0.0 1.0").
    at = chunk.byte_offset + 4 * 5 + 3
    assert data[at] == 0x46
    data[at] ^= 0x10
    shard.write_bytes(bytes(data))
    code, console = predict(s, tmp_path, capsys)
    assert code == 1
    assert f"rule predict: {str(shard)!r}: frames {first}..{last} are damaged" in console
    assert f"delete {str(shard)!r} and run the same command again" in console
    assert "a bug" not in console and "Traceback" not in console
    assert not (s.base / "prediction_results.tsv").exists()
    with pytest.raises(FeaturesError, match=rf"frames {first}\.\.{last} are damaged"):
        shard_rows(s.shards["esm"], np.array([3, first + 1]))  # validation reads it too


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_nan_or_infinite_feature_is_refused_naming_the_frame(tmp_path, capsys, value):
    s = sample(tmp_path)
    shard = s.shards["dnabert"][1]
    with h5py.File(shard, "r+") as h5:  # HDF5 computes the chunk's checksum anew
        h5["embeddings"][37, 5] = value
    code, console = predict(s, tmp_path, capsys)
    assert code == 1
    assert (
        f"rule predict: {str(shard)!r}: frame 237: its dnabert embedding holds NaN or an "
        f"infinite value: the file is damaged; delete {str(shard)!r} and run the same command "
        "again"
    ) in console
    assert "a bug" not in console
    with pytest.raises(FeaturesError, match=r"frame 237: its dnabert embedding holds NaN"):
        shard_rows(s.shards["dnabert"], np.array([10, 236, 237, 400]))
    np.testing.assert_array_equal(  # the other frames still read
        shard_rows(s.shards["dnabert"], np.array([10, 400])), emb_of([10, 400], 768)
    )


def test_a_copy_is_never_taken_from_a_damaged_earlier_shard(tmp_path):
    s = sample(tmp_path)
    earlier = s.shards["esm"][0]
    with h5py.File(earlier, "r+") as h5:
        h5["embeddings"][COPY[1], 0] = np.nan
    rows = rows_dir(tmp_path, "again", 200, 500, [r for r in range(200, 500) if r != COPY[0]],
                    2560, attrs={"model": "esm"})  # fmt: skip
    out = tmp_path / "shard_1.h5"
    with pytest.raises(FeaturesError, match=rf"{earlier}'?: frame {COPY[1]}: .* NaN"):
        finalize_shard(rows, s.sources, [(0, 200, str(earlier))], out)
    assert not out.exists()


def test_an_embed_jobs_nan_row_never_reaches_a_shard_file(tmp_path):
    from virnuc_core.jobs.store import ShardCheckpoint

    records = np.arange(10, 20)
    rows = emb_of(records, 4)
    rows[6, 1] = np.nan  # frame 16
    ckpt = ShardCheckpoint.open(tmp_path / "w", "fp", 4, 10, 20, every_records=100)
    ckpt.append(records, rows)
    ckpt.commit()
    done = ckpt.complete(tmp_path / "shard_0.rows", {"attrs": {"model": "esm"}, "metrics": {}})
    out = tmp_path / "shard_0.h5"
    with pytest.raises(ValueError, match=r"row of frame 16 holds NaN .* delete '.*shard_0\.rows'"):
        finalize_shard(done, sources_file(tmp_path, np.arange(20)), [], out)
    assert not out.exists()
