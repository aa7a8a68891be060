"""Memory that grows with the sample: every step function at two sizes under tracemalloc.

Each step runs on a sample of about 2,000 and about 20,000 kept frames (numpy's allocations
are traced too); the difference of the two peaks, per added frame, must stay under the step's
budget (50 bytes a frame; 120 for plan_shards, which compares sequences). Block sizes are set
small so that fixed-size buffers are full at both sizes: what is left is what grows.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from virnuc_core.data.index import index_sample
from virnuc_core.jobs.embed_job import ReferenceOutput, ShardInput, run_embed_job
from virnuc_core.jobs.finalize import finalize_shard
from virnuc_core.jobs.merge import write_features
from virnuc_core.jobs.plan import model_plan, plan_shards, read_plan
from virnuc_core.jobs.references import read_sample, write_sample
from virnuc_core.jobs.validate_job import validate_model
from virnuc_core.report.figures import plot_scores
from virnuc_core.report.predictions import predict_sample
from virnuc_core.report.run_summary import summarize_sample
from virnuc_core.settings import WorkflowSettings

BUDGET = 50  # bytes of peak memory per added kept frame
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"]
SENSE = [c for c in SENSE if c not in ("TAA", "TAG", "TGA")]


def write_reads(path: Path, n: int, seed: int) -> None:
    """``n`` 300-base reads of random sense codons (frame F1 always kept), 10% repeated."""
    rng = np.random.default_rng(seed)
    codons = np.array(SENSE)[rng.integers(0, len(SENSE), size=(n, 100))]
    seqs = ["".join(row) for row in codons]
    seqs += seqs[: n // 10]
    path.write_text("".join(f">read{i} x\n{s}\n" for i, s in enumerate(seqs)))


def peak(fn, *args, **kwargs) -> int:
    """Peak traced bytes while ``fn`` runs (above what was allocated before it)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def run_steps(folder: Path, n_reads: int) -> tuple[int, dict[str, int]]:
    """Every step on a sample of ``n_reads`` reads: (kept frames, peak bytes per step)."""
    folder.mkdir(parents=True)
    reads = folder / "reads.fa"
    write_reads(reads, n_reads, seed=n_reads)
    out = {k: str(folder / v) for k, v in {
        "frames": "frames.fa", "proteins": "proteins.faa", "index": "frames.index.npy",
        "counts": "frames.counts.json"}.items()}  # fmt: skip
    peaks = {"index_fasta": peak(index_sample, [str(reads)], 300, out)}
    sources = {m: folder / f"{m}.sources.npy" for m in ("dnabert", "esm")}
    seqs = {"dnabert": out["frames"], "esm": out["proteins"]}
    plan_json = folder / "plan.json"
    peaks["plan_shards"] = peak(
        plan_shards, out["index"], seqs, 2, True, plan_json, sources, block_bytes=1 << 16
    )
    config = {"samples": {"s": str(reads)}, "chunk_length": 300, "shards": 2,
              "models": {"dnabert": "standin", "esm": "standin"}, "precision": "fp32",
              "checkpoint_every": 500, "progress_seconds": 3600,
              "token_budget": {"dnabert": 2048, "esm": 2048}}  # fmt: skip
    settings = WorkflowSettings.from_config(config)
    sample = str(folder / "sample.npy")
    peaks["validation_sample"] = peak(write_sample, out["index"], 200, 0, sample)
    shards, refs = {}, {m: [] for m in ("dnabert", "esm")}
    for model in ("dnabert", "esm"):
        plan = model_plan(read_plan(plan_json), model)
        shards[model] = []
        for i in range(2):
            shard = ShardInput.read(model, seqs[model], out["index"], sources[model], plan_json, i)
            rows = folder / f"{model}_{i}.rows"
            refs[model].append(str(folder / f"{model}_{i}.reference.h5"))
            reference = ReferenceOutput(read_sample(sample), refs[model][-1])
            job = peak(run_embed_job, settings.embed(model), shard, folder / "work", rows, 0,
                       reference)  # fmt: skip
            peaks["embed_shard"] = max(peaks.get("embed_shard", 0), job)
            h5 = folder / "embeddings" / model / f"shard_{i}.h5"
            earlier = [(*plan.shard(j), str(p)) for j, p in enumerate(shards[model])]
            fin = peak(finalize_shard, rows, sources[model], earlier, h5, block_bytes=1 << 18)
            peaks["finalize_shard"] = max(peaks.get("finalize_shard", 0), fin)
            shards[model].append(h5)
    features = folder / "features.h5"
    peaks["merge_shards"] = peak(
        write_features, shards, out["index"], out["frames"], features, ids_block=256
    )
    pred, high = folder / "p.tsv", folder / "h.tsv"
    peaks["predict"] = peak(
        predict_sample, features, "tiny", pred, high, block_bytes=1 << 18, run_chunks=256
    )
    ins = {"predictions": pred, "highest": high, "counts": out["counts"], "features": features}
    ins["index"] = out["index"]
    outs = {"summary": folder / "summary.tsv", "html": folder / "s.html"}
    peaks["summarize_sample"] = peak(summarize_sample, "s", [reads], 300, "tiny", ins, outs)
    peaks["report_figures"] = peak(plot_scores, pred, outs["summary"], folder / "scores.png")
    for model in ("dnabert", "esm"):
        files = {
            k: folder / f"v_{model}.{k}" for k in ("table", "reference", "summary", "histogram")
        }
        v = peak(validate_model, settings.embed(model), settings.validate, shards[model],
                 seqs[model], out["index"], out["frames"], files, sample, refs[model])  # fmt: skip
        peaks["validate_embeddings"] = max(peaks.get("validate_embeddings", 0), v)
    frames = json.loads(Path(out["counts"]).read_text())["frames"]
    return frames, peaks


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    from virnuc_core.data import reads
    from virnuc_core.report import summary

    base = tmp_path_factory.mktemp("memory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reads, "_BLOCK_BYTES", 1 << 16)  # the reader's block, full at both sizes
        mp.setattr(summary, "INDEX_BLOCK", 1 << 12)  # summary's index block, full at both
        return run_steps(base / "small", 2_000), run_steps(base / "large", 20_000)


@pytest.mark.parametrize(
    "step, budget",
    [
        ("index_fasta", BUDGET),
        ("plan_shards", 120),
        ("embed_shard", BUDGET),
        ("finalize_shard", BUDGET),
        ("merge_shards", BUDGET),
        ("predict", BUDGET),
        ("summarize_sample", BUDGET),
        ("report_figures", BUDGET),
        ("validation_sample", BUDGET),
        ("validate_embeddings", BUDGET),
    ],
)
def test_memory_does_not_grow_with_the_sample(two_sizes, step, budget):
    (small, a), (large, b) = two_sizes
    assert large > 8 * small  # the two sizes are an order of magnitude apart
    per_frame = (b[step] - a[step]) / (large - small)
    assert per_frame <= budget, (
        f"{step}: peak {a[step] / 1e6:.1f} MB at {small} frames, {b[step] / 1e6:.1f} MB at "
        f"{large}: {per_frame:.0f} bytes per added frame (budget {budget})"
    )


def test_the_measure_catches_a_step_that_holds_the_sample(tmp_path):
    """The same measure on a function that keeps one float32 row of 64 per frame fails."""

    def holds(n):
        return [np.zeros(64, np.float32) for _ in range(n)]

    per_frame = (peak(holds, 20_000) - peak(holds, 2_000)) / 18_000
    assert per_frame > BUDGET
