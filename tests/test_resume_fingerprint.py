"""What an embed job's checkpoint is resumed on: the content of every sequence of its shard and
the full sha256 of the model's weights. A change to either makes the rerun start afresh."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from virnuc_core.data.frames import FrameBatch
from virnuc_core.data.index import write_index
from virnuc_core.jobs.embed_job import ShardInput, settings_fingerprint
from virnuc_core.jobs.plan import plan_shards
from virnuc_core.jobs.store import ShardCheckpoint
from virnuc_core.settings import EmbedSettings

MODELS = ("dnabert", "esm")
# six records, each sequence unique, and unique still with its last letter changed
PROTEINS = ["MKVLAG", "PQRSTW", "HHKKLL", "DEDEDE", "WYWYWY", "CMCMCM"]
NUCLEOTIDES = ["AACGTA", "CCGTAC", "GGTACG", "TTACGT", "ACACAC", "GTGTGT"]


@pytest.fixture
def sample(tmp_path):
    """Index, sequence files, plan (two shards of three records) and sources."""
    n = len(PROTEINS)
    batch = FrameBatch([f"r{i}_chunk_1F1" for i in range(n)], NUCLEOTIDES, PROTEINS, n, n,
                       np.arange(n), np.zeros(n, np.int32), np.zeros(n, np.uint8))  # fmt: skip
    fa, faa, index = (tmp_path / x for x in ("frames.fa", "proteins.faa", "index.npy"))
    write_index([batch], fa, faa, index)
    seqs = {"dnabert": fa, "esm": faa}
    sources = {m: tmp_path / f"{m}.sources.npy" for m in MODELS}
    plans = plan_shards(index, seqs, 2, True, tmp_path / "plan.json", sources)
    assert all(p.bounds == [0, 3, 6] for p in plans.values())
    return tmp_path, seqs, index, sources


def _shard(sample, model, shard):
    folder, seqs, index, sources = sample
    return ShardInput.read(model, str(seqs[model]), str(index), str(sources[model]),
                           str(folder / "plan.json"), shard, block=2)  # fmt: skip


def _edit_in_place(path, old: str, new: str) -> None:
    data = path.read_bytes()
    assert data.count(f"\n{old}\n".encode()) == 1
    path.write_bytes(data.replace(f"\n{old}\n".encode(), f"\n{new}\n".encode()))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shard", [0, 1])
def test_an_edit_to_the_shards_last_sequence_is_not_resumed(sample, tmp_path, model, shard):
    seqs = sample[1]
    before = _shard(sample, model, shard)
    assert _shard(sample, model, shard).digest == before.digest  # nothing changed: resumes
    work = tmp_path / "work"
    with ShardCheckpoint.open(work, f"settings|{before.digest}", 4, before.lo, before.hi) as ck:
        ck.append(before.distinct, np.ones((before.distinct.size, 4), np.float32))
        ck.commit()  # then the job is killed
    last = before.hi - 1  # the last base (residue) of the shard's last record, same length
    old = (NUCLEOTIDES if model == "dnabert" else PROTEINS)[last]
    _edit_in_place(seqs[model], old, old[:-1] + ("G" if old[-1] != "G" else "T"))
    after = _shard(sample, model, shard)
    assert after.digest != before.digest
    with ShardCheckpoint.open(work, f"settings|{after.digest}", 4, after.lo, after.hi) as ck:
        assert ck.n_committed == 0 and last in ck.pending(after.distinct).tolist()


def _esm_settings(spec: str) -> EmbedSettings:
    return EmbedSettings(
        model="esm", model_spec=spec, precision="fp32", token_budget=1024,
        attention_backend="auto", compile=False, repr_layer=None, checkpoint_every=10,
        checkpoint_seconds=60.0,
        progress_seconds=60.0, keep_stale=False,
    )  # fmt: skip


def test_other_weights_at_the_same_path_are_not_resumed(tmp_path):
    pytest.importorskip("esm")
    from tests.model_fixtures import save_fair_checkpoint
    from virnuc_core.engine.models.esm2_load import random_model
    from virnuc_core.registry import load_encoder

    path = tmp_path / "esm2_t2_test_UR50D.pt"
    settings = _esm_settings(str(path))

    def fingerprint_of(seed: int) -> str:
        model, _ = random_model(seed=seed, num_layers=2, embed_dim=32, attention_heads=2)
        save_fair_checkpoint(model, path, with_regression=False)  # rewritten in place
        fp = settings_fingerprint(settings, load_encoder(settings, "cpu").describe())
        assert hashlib.sha256(path.read_bytes()).hexdigest() in fp  # the file's full sha256
        return fp

    first = fingerprint_of(1)
    work = tmp_path / "work"
    with ShardCheckpoint.open(work, f"{first}|content", 32, 0, 4) as ckpt:
        ckpt.append(np.arange(4), np.ones((4, 32), np.float32))
        ckpt.commit()
    size = path.stat().st_size
    other = fingerprint_of(2)
    assert path.stat().st_size == size  # same size, same path: only the content tells
    assert other != first
    with ShardCheckpoint.open(work, f"{other}|content", 32, 0, 4) as ckpt:
        assert ckpt.n_committed == 0


def test_an_encoder_that_describes_no_weights_checksum_cannot_fingerprint_work(tmp_path):
    """Without the weights' checksum, work made from other weights would be resumed."""
    settings = _esm_settings(str(tmp_path / "esm2_t2_test_UR50D.pt"))
    for described in ({}, {"weights_sha256": ""}, {"weights_sha256_16": "0123456789abcdef"}):
        with pytest.raises(ValueError, match="describes no weights_sha256"):
            settings_fingerprint(settings, described)
