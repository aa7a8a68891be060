"""The real workflow, end to end, on the bundled reads with tiny models (CPU)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from Bio import SeqIO

from tests.workflow_helpers import (
    DEMO_READS,
    DOWNSTREAM_OF_ONE_SHARD,
    REPO,
    STEP_DRIVER,
    committed,
    embed_job,
    embed_job_pid,
    planned_jobs,
    run_snakemake,
    shard_range,
    snakemake_cmd,
    write_config,
)

pytestmark = pytest.mark.workflow
SAMPLE = "results/demo"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """One complete, uninterrupted run of the demo config."""
    work = tmp_path_factory.mktemp("demo")
    write_config(work)
    run_snakemake(work)
    return work


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    write_config(dst)  # same settings; the config file is rewritten with the same content
    return dst


def test_prepare_stage_through_plan_shards(tmp_path):
    write_config(tmp_path, shards=3)
    run_snakemake(tmp_path, f"{SAMPLE}/shards/plan.json")
    frames = list(SeqIO.parse(tmp_path / SAMPLE / "frames.fa", "fasta"))
    proteins = list(SeqIO.parse(tmp_path / SAMPLE / "proteins.faa", "fasta"))
    assert [f.id for f in frames] == [p.id for p in proteins] and len(frames) > 50
    counts = json.loads((tmp_path / SAMPLE / "frames.counts.json").read_text())
    assert counts["frames"] == len(frames) and counts["reads"] == 40
    plan = json.loads((tmp_path / SAMPLE / "shards/plan.json").read_text())
    for model in ("dnabert", "esm"):
        bounds = plan["models"][model]["bounds"]
        assert bounds[0] == 0 and bounds[-1] == len(frames) and len(bounds) == 4
        tokens = plan["models"][model]["tokens"]
        assert max(tokens) - min(tokens) <= 0.2 * sum(tokens)  # about equal work
        sources = np.load(tmp_path / SAMPLE / f"shards/{model}.sources.npy")
        assert sources.tolist() == list(range(len(frames)))  # the demo has no repeats
    # Nothing later ran: this stage stands on its own.
    assert not (tmp_path / SAMPLE / "embeddings").exists()


def embed_resources(workdir: Path, *args: str) -> dict[str, dict[str, str]]:
    """model_shard -> the resources of its embed job, from a dry run's job listing."""
    out = run_snakemake(workdir, "-n", "--profile", str(REPO / "profiles/local-2gpu"),
                        *args).stdout  # fmt: skip
    job = (r"wildcards: sample=demo, model=(\w+), i=(\d+)\n(?:\s+priority: \d+\n)?"
           r"\s+threads: .*\n\s+resources: (.*)")  # fmt: skip
    jobs = {f"{m}_{i}": dict(kv.split("=", 1) for kv in res.split(", "))
            for m, i, res in re.findall(job, out)}  # fmt: skip
    assert len(jobs) == 4, out
    return jobs


def embed_gpus(workdir: Path) -> dict[str, int]:
    """model_shard -> the gpu resource of its embed job with ``--resources gpu=1``."""
    jobs = embed_resources(workdir, "--resources", "gpu=1")
    # a shared job learns the run's GPU count (it picks one of those GPUs)
    assert {r["shared_gpus"] for r in jobs.values()} == {"1"}
    return {name: int(r["gpu"]) for name, r in jobs.items()}


def test_a_model_that_shares_a_gpu_is_not_counted_against_the_gpus(tmp_path):
    write_config(tmp_path)  # the defaults: DNABERT-S shares, ESM-2 takes a GPU of its own
    assert embed_gpus(tmp_path) == {"dnabert_0": 0, "dnabert_1": 0, "esm_0": 1, "esm_1": 1}
    # one boolean, or a mapping that leaves a model out, pass Snakemake's schema validation
    write_config(tmp_path, share_gpu=False, compile=True)
    assert set(embed_gpus(tmp_path).values()) == {1}
    write_config(tmp_path, share_gpu={"esm": True}, compile={"esm": False})
    assert set(embed_gpus(tmp_path).values()) == {0}
    # the profile's own gpu: 2 is replaced by a --resources without gpu: every GPU may be used
    jobs = embed_resources(tmp_path, "--resources", "mem_mb=100000")
    assert {r["shared_gpus"] for r in jobs.values()} == {"0"}


def test_gpus_asked_for_where_none_is_visible_are_told_at_the_start(tmp_path):
    write_config(tmp_path)
    hidden = {"CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, on any machine
    # a real run (a dry run starts nothing to warn about), stopped after its first job
    proc = run_snakemake(tmp_path, "--until", "index_fasta", "--resources", "gpu=1", env=hidden)
    out = proc.stdout + proc.stderr
    assert (
        "--resources gpu=1 asks for GPUs, but none is visible here (CUDA_VISIBLE_DEVICES is ''): "
        "the embed jobs will run ESM-2 and DNABERT-S on the CPU"
    ) in out
    assert "sample 'demo': its plan line (when plan_shards runs) says" in out
    assert out.index("asks for GPUs") < out.index("rule index_fasta:")  # before any job
    other = tmp_path / "other"  # a fresh run that asks for no GPU: nothing to say
    other.mkdir()
    write_config(other)
    proc = run_snakemake(other, "--until", "index_fasta", env=hidden)
    assert "rule index_fasta:" in proc.stdout + proc.stderr
    assert "asks for GPUs" not in proc.stdout + proc.stderr


def test_switching_gpu_sharing_reruns_nothing(demo_run, tmp_path):
    run = copy_run(demo_run, tmp_path / "run")
    assert planned_jobs(run) == {}
    write_config(run, share_gpu={"dnabert": False, "esm": True})
    assert planned_jobs(run) == {}  # where a job runs is no reason to embed again


def test_changing_min_score_reruns_only_the_summary(demo_run, tmp_path):
    from tests.test_regions import _rows, _same, expected_regions
    from tests.test_report import expected_summary

    # regions.tsv is one of the run's outputs (all), by the original rule unless min_score
    s = demo_run / SAMPLE
    _same(_rows(s / "regions.tsv"), expected_regions(DEMO_READS, 500, s / "prediction_results.tsv"))
    run = copy_run(demo_run, tmp_path / "run")
    write_config(run, min_score=0.9)
    assert planned_jobs(run) == {"summarize_sample": 1, "report_figures": 1, "all": 1}
    tables = ("prediction_results.tsv", "prediction_results_highestscore.tsv")
    before = {name: (run / SAMPLE / name).read_bytes() for name in tables}
    run_snakemake(run)
    s = run / SAMPLE
    assert {name: (s / name).read_bytes() for name in tables} == before  # the original's rule
    rows = [line.split("\t") for line in (s / "summary.tsv").read_text().splitlines()[1:]]
    pred, high = (s / name for name in tables)
    assert rows == expected_summary(DEMO_READS, 500, pred, high, 0.9)
    assert rows != expected_summary(DEMO_READS, 500, pred, high)  # the demo's calls do change
    got = _rows(s / "regions.tsv")
    _same(got, expected_regions(DEMO_READS, 500, pred, 0.9))
    assert got != _rows(demo_run / SAMPLE / "regions.tsv")
    assert (
        "<td>viral calls</td><td>min_score 0.9</td>" in (s / "report/run_summary.html").read_text()
    )


def test_demo_produces_every_output(demo_run):
    s = demo_run / SAMPLE
    n = json.loads((s / "frames.counts.json").read_text())["frames"]
    with h5py.File(s / "features.h5") as f:
        ids = f["ids"].asstr()[()].tolist()
        assert f["dnabert"].shape[0] == f["esm"].shape[0] == n
        assert f["dnabert"].is_virtual and f["esm"].is_virtual  # each embedding stored once
        assert f["dnabert"].dtype == np.float32 and np.isfinite(f["esm"][()]).all()
        assert f.attrs["esm.precision"] == "fp32" and "dnabert.encoder.attention_backend" in f.attrs
        rows = {m: f[m][()] for m in ("dnabert", "esm")}
    assert ids == [r.id for r in SeqIO.parse(s / "frames.fa", "fasta")]
    for model in ("dnabert", "esm"):
        parts = []
        for i in range(2):
            with h5py.File(s / f"embeddings/{model}/shard_{i}.h5") as f:
                assert f.attrs["model"] == model and f.attrs["metrics.records_per_s"] > 0
                phases = [f.attrs[f"metrics.{p}_s"] for p in ("claim", "load", "open", "reference")]
                assert min(phases) >= 0 and sum(phases) <= f.attrs["metrics.wall_s"]
                parts.append(f["embeddings"][()])
        np.testing.assert_array_equal(np.concatenate(parts), rows[model])
        table = (s / f"validation/{model}.tsv").read_text().splitlines()
        assert table[0].split("\t") == ["record", "id", "length", "cosine"] and len(table) == 41
        assert (s / f"validation/{model}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(s.glob("embeddings/*/*.rows")) and not (s / "embeddings/esm.h5").exists()
    summary = json.loads((s / "validation/summary.json").read_text())
    assert [m["passed"] for m in summary["models"]] == [True, True]
    assert summary["classifier_agreement"]["n"] == 40
    rows = [line.split("\t") for line in (s / "prediction_results.tsv").read_text().splitlines()]
    assert rows[0] == ["Sequence_ID", "Prediction", "score1", "score2"] and len(rows) == n + 1
    assert [r[0] for r in rows[1:]] == ids
    assert all(abs(float(r[2]) + float(r[3]) - 1) < 1e-5 for r in rows[1:])
    chunks = (s / "prediction_results_highestscore.tsv").read_text().splitlines()
    assert chunks[0] == "Modified_ID\tIs_Virus"
    assert {c.split("\t")[0] for c in chunks[1:]} == {i[:-2] for i in ids}


def test_kill9_midway_then_rerun_resumes_only_that_shard(demo_run, tmp_path):
    write_config(tmp_path, token_budget={"dnabert": 4096, "esm": 256}, checkpoint_every=5)
    cmd = snakemake_cmd(tmp_path, "--keep-going")
    env = {**os.environ, "VIRNUC_TEST_BATCH_DELAY": "0.2"}
    snake = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    work = tmp_path / SAMPLE / "work/esm/shard_0"
    deadline = time.time() + 300
    while committed(work) < 10 and time.time() < deadline:
        time.sleep(0.1)
    pid = embed_job_pid(work)
    assert pid is not None and committed(work) >= 10, "the esm shard 0 job never got going"
    os.kill(pid, signal.SIGKILL)
    snake.communicate(timeout=600)
    assert snake.returncode != 0
    done_before = committed(work)
    lo, hi = shard_range(tmp_path, "demo", "esm", 0)
    assert 0 < done_before < hi - lo
    assert planned_jobs(tmp_path) == DOWNSTREAM_OF_ONE_SHARD

    run_snakemake(tmp_path)
    log = (tmp_path / "logs/demo/embed_shard/esm_0.log").read_text()
    assert f"resuming: {done_before} records committed, {hi - lo - done_before} to embed" in log
    assert not work.exists()  # completed: the checkpoint moved to the job's output
    _assert_same_features(tmp_path, demo_run)


def _assert_same_features(a: Path, b: Path) -> None:
    with h5py.File(a / SAMPLE / "features.h5") as fa, h5py.File(b / SAMPLE / "features.h5") as fb:
        assert fa["ids"].asstr()[()].tolist() == fb["ids"].asstr()[()].tolist()
        for model in ("dnabert", "esm"):
            # Other batch compositions change float rounding only.
            np.testing.assert_allclose(fa[model][()], fb[model][()], rtol=1e-4, atol=1e-5)


def test_sigterm_commits_what_is_done_and_exits_quickly(demo_run, tmp_path):
    """Periodic commits are off (every 100,000 records, 1 h): only the commit that SIGTERM makes
    can save the rows the job has embedded."""
    work, out, log = tmp_path / "work", tmp_path / "shard.rows", tmp_path / "job.log"
    job_spec = embed_job(
        demo_run, "demo", "esm", 0, work, out, log, token_budget={"dnabert": 256, "esm": 256},
        checkpoint_every=100000, checkpoint_seconds=3600, progress_seconds=0.01,
    )  # fmt: skip
    job = subprocess.Popen(
        [sys.executable, "-c", STEP_DRIVER, str(job_spec)],
        env={**os.environ, "VIRNUC_TEST_BATCH_DELAY": "0.3"},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log.touch()
    deadline = time.time() + 120
    seen = 0
    while seen < 5 and time.time() < deadline:
        found = re.findall(r"progress: (\d+)/", log.read_text())
        seen = int(found[-1]) if found else 0
        time.sleep(0.05)
    assert seen >= 5 and committed(work) == 0  # embedded, nothing committed yet
    job.send_signal(signal.SIGTERM)
    _, console = job.communicate(timeout=60)  # at the next batch boundary, not the shard's end
    assert job.returncode == 143, log.read_text() + console
    assert "stopped by SIGTERM; progress committed, rerun to resume" in console
    lo, hi = shard_range(demo_run, "demo", "esm", 0)
    assert seen <= committed(work) < hi - lo and not out.exists()


def test_cuda_oom_is_retried_with_half_the_budget(tmp_path):
    write_config(tmp_path, embed_retries=1, token_budget={"dnabert": 4096, "esm": 4096})
    target = f"{SAMPLE}/embeddings/esm/shard_0.h5"
    proc = run_snakemake(tmp_path, target, env={"VIRNUC_TEST_OOM_ABOVE": "2048"})
    assert "Error in rule embed_shard" in proc.stdout + proc.stderr  # attempt 1 failed
    lo, hi = shard_range(tmp_path, "demo", "esm", 0)
    with h5py.File(tmp_path / target) as f:
        assert f.attrs["token_budget"] == 2048 and f["embeddings"].shape[0] == hi - lo


def test_validation_fails_naming_the_worst_frames(demo_run, tmp_path):
    work = copy_run(demo_run, tmp_path / "run")
    rows = [
        line.split("\t")
        for line in (work / SAMPLE / "validation/esm.tsv").read_text().splitlines()[1:]
    ]
    id_of = {int(r[0]): r[1] for r in rows}  # record -> frame id of the validated sample
    corrupt = sorted(id_of)[::7]
    rng = np.random.default_rng(1)
    for i in range(2):
        lo, hi = shard_range(work, "demo", "esm", i)
        with h5py.File(work / SAMPLE / f"embeddings/esm/shard_{i}.h5", "r+") as f:
            emb = f["embeddings"]
            for r in corrupt:
                if lo <= r < hi:
                    emb[r - lo] = rng.normal(size=emb.shape[1]).astype(np.float32)
    proc = run_snakemake(work, f"{SAMPLE}/validation/esm.json", check=False)
    assert proc.returncode != 0
    assert "esm embeddings failed validation" in proc.stderr  # on the console, not only the log
    log = (work / "logs/demo/validate_embeddings/esm.log").read_text()
    assert "esm embeddings failed validation" in log
    corrupt_ids = {id_of[r] for r in corrupt}
    worst = log.split("Worst frames:")[1].split("\n")[0]
    assert sum(i in worst for i in corrupt_ids) >= min(5, len(corrupt_ids))


def test_sample_without_kept_frames_completes(tmp_path):
    reads = tmp_path / "short.fa"
    reads.write_text(">r1\nAC\n>r2\nGT\n")  # shorter than a codon: no frame to keep
    write_config(tmp_path, samples={"short": str(reads)}, shards=2)
    run_snakemake(tmp_path)
    out = tmp_path / "results/short"
    assert json.loads((out / "frames.counts.json").read_text())["frames"] == 0
    assert json.loads((out / "validation/esm.json").read_text())["n"] == 0
    assert (out / "prediction_results.tsv").read_text().splitlines() == [
        "Sequence_ID\tPrediction\tscore1\tscore2"
    ]
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()[1:]]
    assert [(r[0], r[3], r[6]) for r in rows] == [("r1", "0", "NA"), ("r2", "0", "NA")]


def test_sample_sheet_and_schema_errors(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"sample\tfasta\na\t{DEMO_READS}\nb\t{DEMO_READS}\n")
    write_config(tmp_path, samples=str(sheet))
    assert planned_jobs(tmp_path)["index_fasta"] == 2
    write_config(tmp_path, chunk_length=400)
    proc = run_snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "chunk_length" in proc.stdout + proc.stderr


def test_gzipped_fastq_in_two_files_gives_the_fasta_calls(demo_run, tmp_path):
    """The demo's reads as FASTQ, gzipped, split over two files of one sample: same calls."""
    records = list(SeqIO.parse(DEMO_READS, "fasta"))
    half = len(records) // 2
    files = []
    for i, part in enumerate((records[:half], records[half:])):
        path = tmp_path / f"demo_R{i + 1}.fastq.gz"
        with gzip.open(path, "wt") as out:  # quality lines as a sequencer writes them
            out.writelines(f"@{r.description}\n{r.seq}\n+\n{'I' * len(r)}\n" for r in part)
        files.append(str(path))
    write_config(tmp_path, samples={"demo": files})
    run_snakemake(tmp_path)
    fastq_run, fasta_run = tmp_path / SAMPLE, demo_run / SAMPLE
    parsed = []
    for f in files:  # an independent parser reads what was written
        with gzip.open(f, "rt") as handle:
            parsed += [r.id for r in SeqIO.parse(handle, "fastq")]
    assert parsed == [r.id for r in records]
    outputs = ("prediction_results.tsv", "prediction_results_highestscore.tsv", "summary.tsv")
    for name in (*outputs, "viral.fa"):
        calls = (fastq_run / name).read_text()
        assert len(calls.splitlines()) > 10  # calls to compare, not two empty files
        assert calls == (fasta_run / name).read_text(), name
    with h5py.File(fastq_run / "features.h5") as a, h5py.File(fasta_run / "features.h5") as b:
        for model in ("dnabert", "esm"):
            np.testing.assert_array_equal(a[model][()], b[model][()])


def test_validation_takes_the_embed_jobs_rows_and_makes_only_what_they_lack(demo_run, tmp_path):
    work = copy_run(demo_run, tmp_path / "run")
    s = work / SAMPLE
    before = {}
    for model in ("dnabert", "esm"):
        with h5py.File(s / f"validation/{model}.reference.h5") as f:
            assert f.attrs["reference_rows_from_embed_jobs"] == 40  # none loaded the model again
            before[model] = dict(zip(f["records"][()].tolist(), f["embeddings"][()], strict=True))
    with h5py.File(s / "embeddings/esm/shard_0.reference.h5", "r+") as f:
        f["embeddings"][0, 0] += 1.0  # fails its checksum from now on
    write_config(work, validate={"n": 12, "mean_cosine": 0.999, "min_cosine": 0.99, "seed": 5})
    planned = planned_jobs(work)
    assert "embed_shard" not in planned and planned["validation_sample"] == 1  # a new sample only
    proc = run_snakemake(work)
    assert "fails its checksum" in proc.stderr and "computing them here" in proc.stderr
    lo, hi = shard_range(work, "demo", "esm", 0)
    for model in ("dnabert", "esm"):
        with h5py.File(s / f"validation/{model}.reference.h5") as f:
            records, rows = f["records"][()], f["embeddings"][()]
            from_jobs = f.attrs["reference_rows_from_embed_jobs"]
        assert len(records) == 12
        old = np.isin(records, list(before[model]))  # drawn before too: the jobs made them
        usable = old & ~((records >= lo) & (records < hi)) if model == "esm" else old
        assert from_jobs == usable.sum() and 0 < usable.sum() < 12
        # rows made here by the reference path equal those the embed jobs made
        want = np.stack([before[model][r] for r in records[old].tolist()])
        np.testing.assert_allclose(rows[old], want, rtol=1e-5, atol=1e-6)
