"""The demo workflow through profiles/slurm on a real one-node SLURM cluster (tests/slurm).

The cluster declares fake GPUs (tests/slurm/fixture.py), so the GPU rules' ``gpu=1`` becomes
``sbatch --gpus=1`` and is scheduled; CUDA sees no device there and the jobs run on the CPU.
Only the site-specific values of the profile are overridden on the command line (partition,
and memory / runtime / CPUs small enough for this node); everything else is the profile's.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.workflow_helpers import REPO, committed, planned_jobs, write_config

# load tests/slurm/fixture.py by path, as tests/test_slurm_smoke.py does (one module, shared)
_spec = importlib.util.spec_from_file_location(
    "virnuc_slurm_fixture", Path(__file__).parent / "slurm" / "fixture.py"
)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_spec.name])
slurm_cluster = sys.modules[_spec.name].slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SAMPLE = "results/demo"
PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"embed_shard", "validate_embeddings"}
ESM_SHARD_0 = "rule_embed_shard_wildcards_demo_esm_0"  # the plugin's job comment
DOWNSTREAM_OF_ONE_SHARD = {
    "embed_shard": 1,
    "merge_shards": 1,
    "features": 1,
    "validate_embeddings": 1,
    "validation_summary": 1,
    "predict": 1,
    "all": 1,
}
# Site values for this 2-CPU node. A list given on the command line replaces the profile's
# whole `default-resources` / `set-resources` entry, so every key is repeated here.
SITE_ARGS = (
    "--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=10", "gpu=0",
    "--set-resources",
    "embed_shard:mem_mb=500", "embed_shard:runtime=10", "embed_shard:cpus_per_task=1",
    "validate_embeddings:mem_mb=500", "validate_embeddings:runtime=10",
    "--slurm-init-seconds-before-status-checks", "2",
    "--jobs", "4",
)  # fmt: skip
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


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


def start_profile_run(workdir: Path, log: Path, env: dict, *extra: str) -> subprocess.Popen:
    """Start Snakemake through the profile in the background; its output goes to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            profile_cmd(workdir, *extra), env=env, stdout=out, stderr=subprocess.STDOUT
        )


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """Wait for a profile run; on timeout stop it (Snakemake scancels its jobs) and fail."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        pytest.fail(f"snakemake ran past {timeout} s:\n{log.read_text()[-6000:]}")
    return log.read_text()


def run_profile(workdir: Path, env: dict, name: str, *extra: str, timeout: float = 240) -> str:
    """Run Snakemake through the profile to the end and return its log; fail if it fails."""
    log = workdir / f"{name}.log"
    proc = start_profile_run(workdir, log, env, *extra)
    text = finish(proc, log, timeout)
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{text[-6000:]}"
    return text


def run_id(log: str) -> str:
    m = re.search(r"SLURM run ID: (\S+)", log)
    assert m, f"no 'SLURM run ID' in snakemake's log:\n{log[-4000:]}"
    return m.group(1)


def rule_of(comment: str) -> str:
    """Rule name from the plugin's job comment ``rule_<rule>[_wildcards_<w>]``."""
    return re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment).group(1)


def assert_every_job_went_through_sbatch(cluster, log: str, plan: dict[str, int]) -> list[str]:
    """One COMPLETED SLURM job per planned job (``all`` is local), GPUs only for GPU rules."""
    submitted = [slurm for _, slurm in SUBMITTED.findall(log)]
    expected = Counter({rule: n for rule, n in plan.items() if rule != "all"})
    assert len(submitted) == len(set(submitted)) == expected.total(), (plan, log[-4000:])
    jobs = {j["jobid"]: j for j in cluster.jobs(run_id(log))}
    assert set(jobs) == set(submitted), (jobs, submitted)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, jobs
    assert Counter(rule_of(j["comment"]) for j in jobs.values()) == expected
    for job_id, job in jobs.items():
        tres = cluster.show_job(job_id).get("TresPerJob", "")
        gpus = "gres:gpu:1" if rule_of(job["comment"]) in GPU_RULES else ""
        assert tres == gpus, (job, tres)
    return sorted(submitted, key=int)


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
def local_run(tmp_path_factory):
    """The demo config run locally, started in the background (the SLURM runs mostly wait)."""
    work = tmp_path_factory.mktemp("local")
    write_config(work)
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
         str(work), "--configfile", str(work / "config.yaml"), "--cores", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def wait() -> Path:
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, f"local run failed:\n{out[-4000:]}"
        return work

    yield wait
    if run.poll() is None:
        run.kill()
        run.wait()


@pytest.fixture
def cluster(slurm_cluster):
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    if slurm_cluster.gpus() < 2:
        pytest.fail(
            f"the SLURM test cluster in {slurm_cluster.state_dir} declares "
            f"{slurm_cluster.gpus()} GPUs, 2 needed: it was started without "
            "VIRNUC_SLURM_FAKE_GPUS=2; stop it (tests/slurm/cluster.sh stop) and rerun",
            pytrace=False,
        )
    return slurm_cluster


def test_demo_through_slurm_profile_matches_local_run(cluster, local_run, tmp_path):
    write_config(tmp_path)
    plan = planned_jobs(tmp_path)
    log = run_profile(tmp_path, cluster.env, "snakemake")
    ids = assert_every_job_went_through_sbatch(cluster, log, plan)
    print(f"SLURM job ids: {ids}")
    with h5py.File(tmp_path / SAMPLE / "embeddings/esm/shard_0.h5") as f:
        assert f.attrs["device"] == "cpu"  # SLURM gave a (fake) GPU; torch here has no CUDA
    assert_same_results(tmp_path, local_run())


def slurm_job_by_comment(cluster, name: str, comment: str, state: str) -> str | None:
    jobs = [j for j in cluster.jobs(name) if j["comment"] == comment and j["state"] == state]
    assert len(jobs) <= 1, jobs
    return jobs[0]["jobid"] if jobs else None


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 180):
    """Poll ``check()`` until it is truthy; fail if Snakemake ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended before {what}:\n{log.read_text()[-6000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-6000:]}")


def test_scancel_midway_then_rerun_resumes_only_that_shard(cluster, local_run, tmp_path):
    write_config(tmp_path, token_budget={"dnabert": 4096, "esm": 256}, checkpoint_every=5)
    # sbatch --export=ALL: the delay reaches the jobs through the submitting environment
    env = {**cluster.env, "VIRNUC_TEST_BATCH_DELAY": "0.2"}
    log = tmp_path / "snakemake-1.log"
    snake = start_profile_run(tmp_path, log, env, "--retries", "0")
    work = tmp_path / SAMPLE / "work/esm/shard_0"
    name = wait_for("the SLURM run ID", lambda: re.findall(r"SLURM run ID: (\S+)", log.read_text()),
                    snake, log)[0]  # fmt: skip
    wait_for("10 committed esm rows", lambda: committed(work) >= 10, snake, log)
    job_id = slurm_job_by_comment(cluster, name, ESM_SHARD_0, "RUNNING")
    assert job_id, cluster.jobs(name)
    subprocess.run(["scancel", job_id], env=cluster.env, check=True, timeout=30)
    text = finish(snake, log, timeout=240)

    assert snake.returncode != 0
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in text, text[-6000:]
    assert cluster.show_job(job_id)["JobState"] == "CANCELLED"
    done_before = committed(work)
    assert 10 <= done_before < 97
    job_log = (tmp_path / "logs/demo/embed_shard/esm_0.log").read_text()
    assert "stopped by SIGTERM; progress committed" in job_log, job_log[-3000:]
    assert planned_jobs(tmp_path) == DOWNSTREAM_OF_ONE_SHARD

    text = run_profile(tmp_path, cluster.env, "snakemake-2")
    ids = assert_every_job_went_through_sbatch(cluster, text, DOWNSTREAM_OF_ONE_SHARD)
    print(f"cancelled SLURM job {job_id} at {done_before} rows; rerun SLURM job ids: {ids}")
    job_log = (tmp_path / "logs/demo/embed_shard/esm_0.log").read_text()
    assert f"resuming: {done_before} records committed, {97 - done_before} to embed" in job_log
    assert not work.exists()  # finalized: the checkpoint is gone
    assert_same_results(tmp_path, local_run())
