"""The default run is the fast run: `shards: auto` gives each GPU of the run one embed job per
model (ESM-2 3B loaded once per GPU), and ESM-2's job, the run's critical path, starts before the
DNABERT-S job that shares its GPU takes the cores it needs.

Through Snakemake on the demo (tiny models, CPU), with the config's `shards` left to its default.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, run_snakemake, snakemake_cmd, write_config

pytestmark = pytest.mark.workflow


def default_shards_config(workdir: Path) -> None:
    """The demo config with `shards` left out (the schema's default)."""
    path = write_config(workdir)
    config = yaml.safe_load(path.read_text())
    config.pop("shards", None)
    path.write_text(yaml.safe_dump(config))


def embed_jobs(console: str) -> list[tuple[str, str]]:
    """(model, shard) of every embed_shard job, in the order Snakemake printed them."""
    jobs = []
    for block in re.split(r"\n(?=\S*rule \w+:)", console):
        if re.match(r"\S*rule embed_shard:", block.lstrip()):
            found = re.search(r"wildcards: sample=\w+, model=(\w+), i=(\d+)", block)
            jobs.append((found.group(1), found.group(2)))
    return jobs


@pytest.mark.parametrize(
    ("resources", "shards"), [((), 1), (("--resources", "gpu=1"), 1), (("--resources", "gpu=2"), 2)]
)
def test_auto_shards_follow_the_runs_gpus(tmp_path, resources, shards):
    default_shards_config(tmp_path)
    proc = run_snakemake(tmp_path, "-n", *resources)
    console = proc.stdout + proc.stderr
    jobs = embed_jobs(console)
    for model in ("dnabert", "esm"):
        assert sorted(i for m, i in jobs if m == model) == [str(i) for i in range(shards)]
    assert f"shards: auto -> {shards} per model" in console


def test_a_spawned_job_takes_the_shards_its_run_decided(tmp_path):
    """A cluster job reads the workflow again without the run's --resources: it takes `auto`
    from the environment its run exported (sbatch --export=ALL), and refuses to guess."""
    default_shards_config(tmp_path)
    job = ("-n", "--mode", "remote")  # how Snakemake starts a job on a cluster node
    proc = run_snakemake(tmp_path, *job, env={"VIRNUC_SHARDS": "3"})
    jobs = embed_jobs(proc.stdout + proc.stderr)
    assert sorted(jobs) == [(m, str(i)) for m in ("dnabert", "esm") for i in range(3)]
    env = {k: v for k, v in os.environ.items() if k != "VIRNUC_SHARDS"}
    proc = subprocess.run(snakemake_cmd(tmp_path, *job), env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "shards: auto: this job did not inherit VIRNUC_SHARDS" in proc.stdout + proc.stderr


def test_a_number_of_shards_is_kept(tmp_path):
    write_config(tmp_path, shards=3)
    proc = run_snakemake(tmp_path, "-n", "--resources", "gpu=1")
    jobs = embed_jobs(proc.stdout + proc.stderr)
    assert sorted(jobs) == [(m, str(i)) for m in ("dnabert", "esm") for i in range(3)]
    assert "shards: auto" not in proc.stdout + proc.stderr


def test_esm_embed_job_starts_before_dnabert_takes_the_cores(tmp_path):
    """Five cores hold one embed job (reader_workers 4 + the loop): the one that starts first
    is ESM-2's, although DNABERT-S's is ready at the same moment and needs no GPU of its own."""
    default_shards_config(tmp_path)
    proc = run_snakemake(tmp_path, "--until", "embed_shard", "--resources", "gpu=1", "--cores", "5")
    assert embed_jobs(proc.stdout + proc.stderr) == [("esm", "0"), ("dnabert", "0")]


def test_profiles_document_the_gpu_resource_auto_follows():
    """The profiles set the `gpu` resource that `shards: auto` follows."""
    for name, gpus in (("local-2gpu", 2), ("slurm", 4)):
        profile = yaml.safe_load((REPO / "profiles" / name / "config.v8+.yaml").read_text())
        assert profile["resources"]["gpu"] == gpus
