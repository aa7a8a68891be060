"""The demo workflow through profiles/slurm on a real one-node SLURM cluster (tests/slurm).

The cluster declares fake GPUs (tests/slurm/fixture.py), so the GPU rules' ``gpu=1`` becomes
``sbatch --gpus=1`` and is scheduled; CUDA sees no device there and the jobs run on the CPU.
Only the site-specific values of the profile are overridden on the command line (partition,
and memory / runtime / CPUs small enough for this node); everything else is the profile's.

SLURM runs here mostly wait (jobs take ~5 s, but the plugin's squeue polls come 1 s, then 10 s
more each time nothing finished), so the reference runs (local, and one clean run through SLURM)
start in the background at once and overlap with the scancel test, which comes first.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from tests.workflow_helpers import (
    DOWNSTREAM_OF_ONE_SHARD,
    REPO,
    STEP_DRIVER,
    committed,
    embed_job,
    planned_jobs,
    shard_range,
    snakemake_cmd,
    write_config,
)

# load tests/slurm/fixture.py by path, as tests/test_slurm_smoke.py does (one module, shared)
_spec = importlib.util.spec_from_file_location(
    "virnuc_slurm_fixture", Path(__file__).parent / "slurm" / "fixture.py"
)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_spec.name])
slurm_cluster = sys.modules[_spec.name].slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.workflow, sys.modules[_spec.name].needs_plugin]

SAMPLE = "results/demo"
PROFILE = REPO / "profiles" / "slurm"
# validate_embeddings takes its rows from the embed jobs: no GPU (README, "Validation")
GPU_RULES = {"embed_shard"}
ESM_SHARD_0 = "rule_embed_shard_wildcards_demo_esm_0"  # the plugin's job comment
# Site values for this 2-CPU node. A list given on the command line replaces the profile's
# whole `default-resources` / `set-resources` entry, so every key is repeated here.
SITE_ARGS = (
    "--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=10", "gpu=0",
    "--set-resources",
    "embed_shard:mem_mb=500", "embed_shard:runtime=10", "embed_shard:cpus_per_task=1",
    "validate_embeddings:mem_mb=500", "validate_embeddings:runtime=10",
    # the plugin polls after 1 s, then 10 s later each time nothing finished (not 40 s first)
    "--slurm-init-seconds-before-status-checks", "1",
    "--jobs", "4",
)  # fmt: skip
# Limits far above what a run takes (about 4 minutes for the demo through SLURM on a loaded
# 2-core machine): they only stop a hung run, the tests must not depend on a fast machine.
SLOW = 1200
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def profile_cmd(workdir: Path, *extra: str) -> list[str]:
    """Snakemake through the repository's SLURM profile, run in ``workdir``."""
    return [
        sys.executable, "-m", "snakemake",
        "-s", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        "--profile", str(PROFILE),
        *SITE_ARGS, *extra,
    ]  # fmt: skip


class Background:
    """A Snakemake run in the background, its output in ``log``."""

    def __init__(self, cmd: list[str], env: dict, log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def finish(self, timeout: float) -> str:
        """Wait for the end and return the log; past ``timeout`` stop the run and fail."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"snakemake ran past {timeout} s:\n{self.text()[-6000:]}")
        return self.text()

    def succeed(self, timeout: float = SLOW) -> str:
        """Like :meth:`finish`, and fail unless Snakemake succeeded."""
        text = self.finish(timeout)
        assert self.proc.returncode == 0, f"snakemake failed:\n{text[-6000:]}"
        return text

    def stop(self) -> None:
        """Interrupt a run still going: Snakemake then scancels its SLURM jobs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_id(log: str) -> str:
    m = RUN_ID.search(log)
    assert m, f"no 'SLURM run ID' in snakemake's log:\n{log[-4000:]}"
    return m.group(1)


def rule_of(comment: str) -> str:
    """Rule name from the plugin's job comment ``rule_<rule>[_wildcards_<w>]``."""
    return re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment).group(1)


def slurm_jobs(cluster, log: str) -> dict[str, dict[str, str]]:
    """SLURM job id -> job, for the jobs this run submitted (checked against squeue)."""
    submitted = [slurm for _, slurm in SUBMITTED.findall(log)]
    jobs = {j["jobid"]: j for j in cluster.jobs(run_id(log))}
    assert len(submitted) == len(set(submitted)) and set(jobs) == set(submitted), (jobs, log)
    return jobs


def assert_every_job_went_through_sbatch(cluster, log: str, plan: dict[str, int]) -> list[str]:
    """One COMPLETED SLURM job per planned job (``all`` is local), GPUs only for GPU rules."""
    jobs = slurm_jobs(cluster, log)
    expected = Counter({rule: n for rule, n in plan.items() if rule != "all"})
    assert Counter(rule_of(j["comment"]) for j in jobs.values()) == expected, (jobs, plan)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, jobs
    for job_id, job in jobs.items():
        shown = cluster.show_job(job_id)
        gpus = "gres:gpu:1" if rule_of(job["comment"]) in GPU_RULES else ""
        assert shown.get("TresPerJob", "") == gpus, (job, shown)
        print(f"SLURM job {job_id} {job['comment']} ran {shown['RunTime']} {gpus}")
    return sorted(jobs, key=int)


def assert_same_results(a: Path, b: Path) -> None:
    """Same features (within float rounding of other batch shapes) and the same predictions."""
    with h5py.File(a / SAMPLE / "features.h5") as fa, h5py.File(b / SAMPLE / "features.h5") as fb:
        assert fa["ids"].asstr()[()].tolist() == fb["ids"].asstr()[()].tolist()
        for model in ("dnabert", "esm"):
            np.testing.assert_allclose(fa[model][()], fb[model][()], rtol=1e-4, atol=1e-5)
    for name in ("prediction_results.tsv", "prediction_results_highestscore.tsv"):
        ids_a = [line.split("\t")[0] for line in (a / SAMPLE / name).read_text().splitlines()]
        ids_b = [line.split("\t")[0] for line in (b / SAMPLE / name).read_text().splitlines()]
        assert ids_a == ids_b and len(ids_a) > 1, name


@pytest.fixture(scope="module")
def cluster(slurm_cluster):
    if slurm_cluster.gpus() < 2:
        pytest.fail(
            f"the SLURM test cluster in {slurm_cluster.state_dir} declares "
            f"{slurm_cluster.gpus()} GPUs, 2 needed: it was started without "
            "VIRNUC_SLURM_FAKE_GPUS=2; stop it (tests/slurm/cluster.sh stop) and rerun",
            pytrace=False,
        )
    return slurm_cluster


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The demo config run locally and through the profile, both started now in the background."""
    local, slurm = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm")
    write_config(local)
    write_config(slurm)
    plan = planned_jobs(slurm)
    runs = SimpleNamespace(
        local_dir=local,
        slurm_dir=slurm,
        slurm_plan=plan,
        local=Background(snakemake_cmd(local), dict(os.environ), local / "snakemake.log"),
        slurm=Background(profile_cmd(slurm), cluster.env, slurm / "snakemake.log"),
    )
    yield runs
    runs.slurm.stop()
    runs.local.stop()


def wait_for(what: str, check, run: Background, timeout: float = SLOW):
    """Poll ``check()`` until it is truthy; fail if Snakemake ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if run.proc.poll() is not None:
            pytest.fail(f"snakemake ended before {what}:\n{run.text()[-6000:]}")
        time.sleep(0.2)
    run.stop()
    pytest.fail(f"timed out waiting for {what}:\n{run.text()[-6000:]}")


def test_scancel_midway_then_rerun_resumes_only_that_shard(cluster, reference, tmp_path):
    write_config(tmp_path, token_budget={"dnabert": 4096, "esm": 256}, checkpoint_every=5)
    plan = planned_jobs(tmp_path)
    # sbatch --export=ALL: the delay reaches the jobs through the submitting environment
    env = {**cluster.env, "VIRNUC_TEST_BATCH_DELAY": "0.2"}
    first = Background(profile_cmd(tmp_path, "--retries", "0"), env, tmp_path / "snakemake-1.log")
    work = tmp_path / SAMPLE / "work/esm/shard_0"
    try:
        name = wait_for("the SLURM run ID", lambda: RUN_ID.findall(first.text()), first)[0]
        wait_for("10 committed esm rows", lambda: committed(work) >= 10, first)
        running = [j for j in cluster.jobs(name) if j["comment"] == ESM_SHARD_0]
        assert [j["state"] for j in running] == ["RUNNING"], running
        job_id = running[0]["jobid"]
        subprocess.run(["scancel", job_id], env=cluster.env, check=True, timeout=30)
        text = first.finish(timeout=SLOW)
    finally:
        first.stop()

    assert first.proc.returncode != 0
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in text, text[-6000:]
    done_before = committed(work)  # how it ended: test_scancel_reaches_the_embed_jobs_...
    lo, hi = shard_range(tmp_path, "demo", "esm", 0)
    assert 10 <= done_before < hi - lo
    # That shard and what depends on it, as after a kill -9 in a local run.
    downstream = DOWNSTREAM_OF_ONE_SHARD
    # The first run: every other job went through SLURM and completed, that one was cancelled.
    jobs = slurm_jobs(cluster, text)
    assert {j: v["state"] for j, v in jobs.items() if v["state"] != "COMPLETED"} == {
        job_id: "CANCELLED"
    }
    ran = Counter(rule_of(j["comment"]) for j in jobs.values())
    assert ran == Counter(plan) - Counter(downstream) + Counter(embed_shard=1)
    assert planned_jobs(tmp_path) == downstream

    rerun = Background(profile_cmd(tmp_path), cluster.env, tmp_path / "snakemake-2.log")
    ids = assert_every_job_went_through_sbatch(cluster, rerun.succeed(), downstream)
    print(f"cancelled SLURM job {job_id} at {done_before} rows; the rerun's jobs: {ids}")
    job_log = (tmp_path / "logs/demo/embed_shard/esm_0.log").read_text()
    assert f"resuming: {done_before} records committed, {hi - lo - done_before} to embed" in job_log
    assert not work.exists()  # completed: the checkpoint moved to the job's output
    reference.local.succeed()
    assert_same_results(tmp_path, reference.local_dir)


def test_demo_through_slurm_profile_matches_local_run(cluster, reference):
    log = reference.slurm.succeed()
    ids = assert_every_job_went_through_sbatch(cluster, log, reference.slurm_plan)
    print(f"SLURM job ids of the clean run: {ids}")
    with h5py.File(reference.slurm_dir / SAMPLE / "embeddings/esm/shard_0.h5") as f:
        assert f.attrs["device"] == "cpu"  # SLURM gave a (fake) GPU; torch here has no CUDA
    reference.local.succeed()
    assert_same_results(reference.slurm_dir, reference.local_dir)


def test_scancel_reaches_the_embed_jobs_sigterm_path(cluster, reference, tmp_path):
    """scancel signals every process of the job (the reader workers too): the embed job must
    still commit and exit 143, which SLURM records as the job's exit code."""
    reference.local.succeed()
    work, out, log = tmp_path / "work", tmp_path / "shard.rows", tmp_path / "step.log"
    spec = embed_job(
        reference.local_dir, "demo", "esm", 0, work, out, log,
        token_budget={"dnabert": 4096, "esm": 256}, checkpoint_every=5,
    )  # fmt: skip
    driver = tmp_path / "driver.py"
    driver.write_text(STEP_DRIVER)
    script = tmp_path / "job.sh"
    # the real step script (scripts/embed_shard.py) as Snakemake's script: directive runs it
    argv = " ".join(shlex.quote(str(a)) for a in (sys.executable, driver, spec))
    script.write_text(f"#!/bin/sh\nexec {argv}\n")
    env = {**cluster.env, "VIRNUC_TEST_BATCH_DELAY": "0.3"}
    job_id = subprocess.run(
        ["sbatch", "--parsable", "-p", "debug", "--mem", "500", "-t", "5", "-c", "1",
         "--gpus=1", "-o", str(tmp_path / "job.log"), str(script)],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    deadline = time.monotonic() + 120
    while committed(work) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    before = committed(work)
    subprocess.run(["scancel", job_id], env=cluster.env, check=True, timeout=30)
    deadline = time.monotonic() + 30  # KillWait=5 s: TERM, then KILL
    while time.monotonic() < deadline:
        shown = cluster.show_job(job_id)
        if shown["JobState"] not in ("RUNNING", "COMPLETING") and shown["ExitCode"] != "0:0":
            break
        time.sleep(0.2)
    log = (tmp_path / "job.log").read_text() + log.read_text()
    assert before >= 5, log[-3000:]
    assert shown["JobState"] == "CANCELLED", shown
    # "1:0": crashed (a reader worker died of the SIGTERM first), "0:9": killed after KillWait
    assert shown["ExitCode"] == "143:0", f"ExitCode={shown['ExitCode']}\n{log[-3000:]}"
    assert "stopped by SIGTERM; progress committed, rerun to resume" in log
    assert committed(work) >= before and not out.exists()
