"""An embed job's reference rows beside its loop: the same rows and embeddings as before it, the
rule that decides, and what happens when the thread fails or runs out of GPU memory."""

from __future__ import annotations

import contextlib
import logging
import time

import h5py
import numpy as np
import psutil
import pytest
import torch

from virnuc_core.data.index import index_sample
from virnuc_core.engine.runner import RecordReader, read_tokens
from virnuc_core.jobs import embed_job, reference_task
from virnuc_core.jobs.embed_job import ReferenceOutput, ShardInput, run_embed_job
from virnuc_core.jobs.plan import plan_shards
from virnuc_core.jobs.references import read_sample, write_sample
from virnuc_core.jobs.shard_rows import ShardRows
from virnuc_core.settings import WorkflowSettings

SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"]
SENSE = [c for c in SENSE if c not in ("TAA", "TAG", "TGA")]
MODELS = ("dnabert", "esm")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A sample of 40 reads of 300 bases (frame F1 always kept), one shard, 12 sampled."""
    folder = tmp_path_factory.mktemp("refs")
    rng = np.random.default_rng(5)
    reads = folder / "reads.fa"
    codons = np.array(SENSE)[rng.integers(0, len(SENSE), size=(40, 100))]
    reads.write_text("".join(f">r{i}\n{''.join(row)}\n" for i, row in enumerate(codons)))
    out = {k: str(folder / k) for k in ("frames", "proteins", "index", "counts")}
    index_sample([str(reads)], 300, out)
    seqs = {"dnabert": out["frames"], "esm": out["proteins"]}
    sources = {m: folder / f"{m}.sources.npy" for m in MODELS}
    plan_shards(out["index"], seqs, 1, True, folder / "plan.json", sources)
    write_sample(out["index"], 12, 0, str(folder / "sample.npy"))
    return folder, out, seqs, sources


def run_job(sample, tmp_path, model, beside, name):
    folder, out, seqs, sources = sample
    config = {"samples": {"s": "x"}, "chunk_length": 300, "precision": "fp32",
              "models": {"dnabert": "tiny", "esm": "tiny"}, "progress_seconds": 3600,
              "token_budget": {"dnabert": 512, "esm": 256}}  # fmt: skip
    settings = WorkflowSettings.from_config(config).embed(model)
    shard = ShardInput.read(model, seqs[model], out["index"], sources[model],
                            str(folder / "plan.json"), 0)  # fmt: skip
    rows, ref = tmp_path / f"{name}.rows", tmp_path / f"{name}.reference.h5"
    reference = ReferenceOutput(read_sample(str(folder / "sample.npy")), str(ref), beside)
    run_embed_job(settings, shard, str(tmp_path / f"{name}.work"), str(rows), 1, reference)
    got = ShardRows(rows)
    with h5py.File(ref) as f:
        refs = f["records"][()], f["embeddings"][()]
    return got.gather(got.positions()[shard.distinct - shard.lo]), refs, got.meta["metrics"]


@pytest.mark.parametrize("model", MODELS)
def test_rows_made_beside_the_loop_equal_rows_made_before_it(sample, tmp_path, model, caplog):
    with caplog.at_level(logging.INFO, "virnuc.references"):
        fast, (records, rows), metrics = run_job(sample, tmp_path, model, True, "beside")
    assert "reference rows beside the embed loop" in caplog.text
    assert metrics["reference_beside"] == 1 and metrics["reference_rows_s"] > 0
    fast0, (records0, rows0), metrics0 = run_job(sample, tmp_path, model, False, "before")
    assert metrics0["reference_beside"] == 0
    assert records.size == 12 and np.array_equal(records, records0)
    np.testing.assert_allclose(rows, rows0, rtol=1e-6, atol=1e-7)  # the same fp32 forward
    np.testing.assert_allclose(fast, fast0, rtol=1e-6, atol=1e-7)
    assert np.abs(rows).sum() > 0 and np.abs(fast).sum() > 0


def test_rows_that_run_out_of_gpu_memory_beside_the_loop_are_made_after_it(
    sample, tmp_path, monkeypatch, caplog
):
    real, calls = reference_task.shard_reference, []

    def first_fails(*args):
        calls.append(time.time())
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(*args)

    monkeypatch.setattr(reference_task, "shard_reference", first_fails)
    with caplog.at_level(logging.WARNING, "virnuc.references"):
        _, (records, rows), metrics = run_job(sample, tmp_path, "esm", True, "oom")
    assert len(calls) == 2 and "ran out of GPU memory beside the loop" in caplog.text
    assert records.size == 12 and np.abs(rows).sum() > 0 and metrics["reference_beside"] == 1


@pytest.mark.parametrize("beside", [True, False])
def test_another_error_fails_the_job_and_leaves_no_output(sample, tmp_path, monkeypatch, beside):
    def broken(*args):
        raise ValueError("reference rows broke (test)")

    monkeypatch.setattr(reference_task, "shard_reference", broken)
    with pytest.raises(ValueError, match="reference rows broke"):
        run_job(sample, tmp_path, "esm", beside, "broken")
    assert not (tmp_path / "broken.rows").exists()
    assert not (tmp_path / "broken.reference.h5").exists()


def test_a_loop_that_fails_stops_its_readers(sample, tmp_path, monkeypatch):
    """Closed, not left to the garbage collector: the traceback keeps the job's frames alive,
    and a process exiting with its readers alive waits for them (they ignore SIGTERM)."""
    readers, real = [], embed_job._read_tokens

    def kept(*args):
        readers.append(real(*args))
        return readers[-1]

    monkeypatch.setattr(embed_job, "_read_tokens", kept)
    monkeypatch.setenv("VIRNUC_TEST_OOM_ABOVE", "1")  # the first batch fails
    with pytest.raises(torch.OutOfMemoryError):
        run_job(sample, tmp_path, "esm", True, "oom_loop")
    assert len(readers) == 1 and readers[0].gi_frame is None


class Encoder:
    def __init__(self, size):
        self.size = size

    def reference_bytes(self):
        return self.size


def test_beside_needs_cuda_and_room_for_two_and_a_half_reference_copies(monkeypatch):
    assert not reference_task.fits_beside(Encoder(0), torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (250, 1000))
    assert reference_task.fits_beside(Encoder(100), torch.device("cuda", 0))
    assert not reference_task.fits_beside(Encoder(101), torch.device("cuda", 0))


def test_the_readers_are_forked_before_the_first_item_is_asked_for(sample):
    folder, out, seqs, sources = sample
    shard = ShardInput.read("esm", seqs["esm"], out["index"], sources["esm"],
                            str(folder / "plan.json"), 0)  # fmt: skip
    records = shard.distinct[:4]
    reader = RecordReader(seqs["esm"], records, *shard.spans(records), lambda s: [b""] * len(s))
    before = {p.pid for p in psutil.Process().children()}
    with contextlib.closing(read_tokens(reader, 2)) as tokens:
        started = {p.pid for p in psutil.Process().children()} - before
        assert len(started) == 2  # so a thread started after this is not in their fork
        assert [r for r, _ in tokens] == records.tolist()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", MODELS)
def test_gpu_rows_beside_the_loop_on_their_own_stream_equal_rows_before_it(
    sample, tmp_path, monkeypatch, model
):
    """On a GPU with room the job decides by itself (``beside`` None) to make them beside."""
    monkeypatch.setenv("VIRNUC_GPU_LOCK_DIR", str(tmp_path / "locks"))
    fast, (records, rows), metrics = run_job(sample, tmp_path, model, None, "beside")
    assert metrics["torch_device"].startswith("cuda") and metrics["reference_beside"] == 1
    fast0, (records0, rows0), metrics0 = run_job(sample, tmp_path, model, False, "before")
    assert metrics0["reference_beside"] == 0 and np.array_equal(records, records0)
    np.testing.assert_allclose(rows, rows0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, fast0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kept, beside", [(False, True), (True, False)])
def test_a_resumed_job_whose_rows_are_kept_does_not_ready_them_beside(monkeypatch, kept, beside):
    """Where the device has room, rows still to make go beside the loop; a resumed job's kept
    rows need no fp32 copy on the device (2.7 s of ESM-2 3B's job on an H200)."""
    from virnuc_core.engine.models.standin import StandInEncoder

    made = []
    monkeypatch.setattr(reference_task, "fits_beside", lambda encoder, device: True)
    monkeypatch.setattr(reference_task, "kept", lambda *args: kept)
    monkeypatch.setattr(reference_task, "shard_reference", lambda *args: made.append(args))
    task = reference_task.ReferenceTask(StandInEncoder("esm"), None, np.arange(3), "fp", "-", {})
    task.prepare()
    task.begin()
    task.finish()
    assert task.beside is beside and len(made) == 1


@pytest.mark.parametrize("beside", [True, False])
def test_the_readers_fork_after_the_host_copy_is_gone_and_before_the_thread(
    sample, tmp_path, monkeypatch, beside
):
    """Forked readers would keep the host's fp32 weights (11.4 GB for ESM-2 3B) for the whole
    loop: the rows (before the loop) or the move to the device (beside it) come first."""
    order, task = [], reference_task.ReferenceTask
    for name in ("prepare", "begin"):
        real = getattr(task, name)
        monkeypatch.setattr(task, name, lambda self, *a, _n=name, _f=real: order.append(_n)
                            or _f(self, *a))  # fmt: skip
    real_read = embed_job._read_tokens
    monkeypatch.setattr(embed_job, "_read_tokens", lambda *a: order.append("fork") or real_read(*a))
    run_job(sample, tmp_path, "esm", beside, "order")
    assert order == ["prepare", "fork", "begin"]
