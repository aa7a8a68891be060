"""Smoke test: a throwaway Snakefile runs through a real one-node SLURM cluster.

Every non-local job must go through sbatch (snakemake-executor-plugin-slurm),
be COMPLETED in squeue, and have written its SLURM_JOB_ID into its output.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

# load tests/slurm/fixture.py by path (works with any pytest import mode)
_spec = importlib.util.spec_from_file_location(
    "virnuc_slurm_fixture", Path(__file__).parent / "slurm" / "fixture.py"
)
_fixture = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_fixture)
slurm_cluster = _fixture.slurm_cluster
WORKFLOW = str(Path(__file__).with_name("test_slurm_workflow.py"))

SNAKEFILE = r"""
localrules: all

rule all:
    input: "c.txt"

rule a:
    output: "a_{i}.txt"
    resources: mem_mb=200, runtime=5
    shell: "echo $SLURM_JOB_ID $SLURM_CPUS_PER_TASK > {output}"

rule b:
    input: expand("a_{i}.txt", i=[1, 2])
    output: "b.txt"
    threads: 2
    resources: mem_mb=300, runtime=5, slurm_partition="debug"
    shell: "echo $SLURM_JOB_ID $SLURM_CPUS_PER_TASK > {output}"

rule c:
    input: "b.txt"
    output: "c.txt"
    shell: "echo $SLURM_JOB_ID $SLURM_CPUS_PER_TASK > {output}"
"""

# the keys the project's profiles/slurm/config.v8+.yaml is meant to carry,
# plus fast status polling for the test
PROFILE = """\
executor: slurm
jobs: 4
slurm-status-command: squeue
slurm-init-seconds-before-status-checks: 8
slurm-keep-successful-logs: true
default-resources:
  mem_mb: 500
  runtime: 10
"""

# (rule, wildcards) -> expected cpus per task
EXPECTED = {
    "a_1.txt": ("rule_a_wildcards_1", "1"),
    "a_2.txt": ("rule_a_wildcards_2", "1"),
    "b.txt": ("rule_b", "2"),
    "c.txt": ("rule_c", "1"),
}


@pytest.mark.slurm
@_fixture.needs_plugin
def test_snakemake_jobs_go_through_sbatch(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.v8+.yaml").write_text(PROFILE)

    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(profile),
        "--snakefile",
        str(tmp_path / "Snakefile"),
        "--directory",
        str(tmp_path),
    ]
    try:
        res = subprocess.run(
            cmd, cwd=tmp_path, env=slurm_cluster.env, capture_output=True, text=True, timeout=240
        )
    except subprocess.TimeoutExpired as e:
        # the fixture's `cluster.sh stop` cancels whatever is left in the queue
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"snakemake timed out after {e.timeout} s; stderr tail:\n{(err or '')[-4000:]}")
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"snakemake failed (rc={res.returncode}):\n{log[-6000:]}"

    # 1. snakemake says every job went to sbatch
    m = re.search(r"SLURM run ID: (\S+)", log)
    assert m, f"no 'SLURM run ID' in snakemake's log:\n{log[-4000:]}"
    run_id = m.group(1)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    assert len(submitted) == len(EXPECTED), f"expected {len(EXPECTED)} sbatch jobs:\n{log[-4000:]}"
    slurm_ids = set(submitted.values())

    # 2. SLURM knows exactly these jobs under the run's name, all COMPLETED
    jobs = {j["jobid"]: j for j in slurm_cluster.jobs(run_id)}
    assert set(jobs) == slurm_ids, (jobs, submitted)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, jobs

    # 3. each output was written inside its own SLURM job with the right CPUs
    seen = set()
    for name, (comment, cpus) in EXPECTED.items():
        out = tmp_path / name
        assert out.exists(), f"{name} missing:\n{log[-4000:]}"
        job_id, cpus_per_task = out.read_text().split()
        assert job_id in jobs, (name, job_id, jobs)
        assert jobs[job_id]["comment"] == comment, jobs[job_id]
        assert cpus_per_task == cpus, (name, cpus_per_task)
        seen.add(job_id)
    assert seen == slurm_ids


def test_without_the_plugin_the_slurm_tests_skip_saying_why():
    """The README's test command on a machine with SLURM but not the plugin passes."""
    hide = "import sys; sys.modules['snakemake_executor_plugin_slurm'] = None; import pytest; "
    args = [
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-k",
        "not without_the_plugin",
        __file__,
        WORKFLOW,
    ]
    run = f"sys.exit(pytest.main({args!r}))"
    proc = subprocess.run(
        [sys.executable, "-c", hide + run], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).parents[1],
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "pip install -e '.[slurm]' to run the SLURM tests" in out, out[-3000:]
    assert re.search(r"^(\d+) skipped(, \d+ deselected)? in ", out, re.M), out[-3000:]
