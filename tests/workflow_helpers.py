"""Running the real Snakemake workflow on tiny data in a temporary folder (for workflow tests)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_READS = REPO / "config" / "demo" / "reads.fa"
# The jobs a rerun plans after esm shard 0 of the demo (2 shards) failed: that shard and what
# depends on it (shard 1's file waits for shard 0's, which its copies may read).
DOWNSTREAM_OF_ONE_SHARD = {
    "embed_shard": 1,
    "finalize_shard": 2,
    "merge_shards": 1,
    "validate_embeddings": 1,
    "validation_summary": 1,
    "predict": 1,
    "summarize_sample": 1,
    "report_figures": 1,
    "all": 1,
}


def write_config(workdir: Path, **overrides) -> Path:
    """The demo config with absolute paths, plus ``overrides``, written into ``workdir``."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["samples"] = {"demo": str(DEMO_READS)}
    config["embed_retries"] = 0
    config.update(overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """The Snakemake command line for the repository's workflow run in ``workdir``."""
    return [
        sys.executable, "-m", "snakemake",
        "-s", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        "--cores", "2",
        *args,
    ]  # fmt: skip


def run_snakemake(
    workdir: Path, *args: str, env: dict | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run Snakemake to the end; output captured; raises with the output when ``check`` fails."""
    proc = subprocess.run(
        snakemake_cmd(workdir, *args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path, *targets: str) -> dict[str, int]:
    """Rule name -> job count that a dry run of ``targets`` would run now."""
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", *targets)
    jobs: dict[str, int] = {}
    lines = (proc.stdout + proc.stderr).splitlines()
    table = False
    for line in lines:
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
            continue
        if table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


def committed(work_dir: Path) -> int:
    """Rows committed in an embed job's checkpoint directory (0 if none yet)."""
    progress = work_dir / "progress.json"
    return json.loads(progress.read_text())["rows"] if progress.exists() else 0


def embed_job_pid(work_dir: Path) -> int | None:
    """The embed job writing ``work_dir``: the process holding its rows.bin open whose parent
    does not (its reader processes may still hold the file they inherited)."""
    import psutil

    rows = str((work_dir / "rows.bin").resolve())
    holders = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(f.path == rows for f in proc.open_files()):
                holders.add(proc.pid)
    for pid in holders:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).ppid() not in holders:
                return pid
    return None


def shard_range(workdir: Path, sample: str, model: str, i: int) -> tuple[int, int]:
    """(lo, hi) of a shard, from the run's plan."""
    plan = json.loads((workdir / f"results/{sample}/shards/plan.json").read_text())
    bounds = plan["models"][model]["bounds"]
    return bounds[i], bounds[i + 1]


# Runs a step script as Snakemake's `script:` directive does: the script's folder on sys.path and
# a `snakemake` object holding the job's files and params (from the JSON file argv[1]). Lets a test
# start one
# # real job by itself, to signal it or submit it to SLURM.
STEP_DRIVER = """
import json, runpy, sys
from pathlib import Path
from types import SimpleNamespace as NS
class Files(list):  # like Snakemake's: by position and by name
    def __init__(self, named):
        super().__init__(named.values())
        self.__dict__.update(named)
job = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, str(Path(job["script"]).parent))
out = Files(job["output"]) if isinstance(job["output"], dict) else job["output"]
sm = NS(rule=job["rule"], input=NS(**job["input"]), output=out, log=job["log"],
        params=NS(**job["params"]), wildcards=NS(**job["wildcards"]),
        resources=NS(**job["resources"]), threads=job["threads"])
runpy.run_path(job["script"], init_globals={"snakemake": sm}, run_name="__main__")
"""


def embed_job(
    run_dir: Path, sample: str, model: str, i: int, work: Path, out: Path, log: Path, **config
) -> Path:
    """Writes ``work``.json, the embed_shard job for ``STEP_DRIVER``: shard ``i`` of a finished
    run's ``sample``, writing ``work`` and ``out``; ``config`` overrides the demo config."""
    from virnuc_core.registry import FAMILIES
    from virnuc_core.settings import WorkflowSettings

    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    settings = WorkflowSettings.from_config({**demo, **config}).embed(model)
    s = run_dir / "results" / sample
    job = {
        "script": str(REPO / "scripts" / "embed_shard.py"),
        "rule": "embed_shard",
        "input": {
            "sequences": str(s / FAMILIES[model].sequences),
            "index": str(s / "frames.index.npy"),
            "sources": str(s / "shards" / f"{model}.sources.npy"),
            "plan": str(s / "shards" / "plan.json"),
            "validation_sample": str(s / "validation" / "sample.npy"),
        },
        "output": {"rows": str(out), "reference": str(out) + ".reference.h5"},
        "log": [str(log)],
        "params": {"settings": settings.rule_params(), "work": str(work)},
        "wildcards": {"sample": sample, "model": model, "i": str(i)},
        "resources": {"token_budget": settings.token_budget, "gpu": 1, "shared_gpus": 0},
        "threads": 1,
    }
    path = work.with_name(work.name + ".json")
    path.write_text(json.dumps(job))
    return path
