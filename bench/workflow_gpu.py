"""The whole workflow at scale on one GPU, the way a user runs it, with one resume.

Generates 500-base reads with a realistic frame mix (``bench/make_reads.py --kind realistic``,
10% duplicates), writes the ESM-2 3B and DNABERT-S architectures with random weights as local
model files (``bench/make_models.py``), and runs ``snakemake --profile profiles/local-2gpu
--resources gpu=1`` through predict, the summary and the report figures (a random classifier
of the right width: ``classifier: tiny``). Midway through the ESM-2 shard it kills the embed
job (SIGKILL), records what a rerun plans, and runs the same command again. Meanwhile it samples
the GPU's utilisation (``nvidia-smi``) and the run folder's disk use. At the end it times the
bare model (the library's encoder, the job's settings) on the same proteins, and writes one JSON:
wall time and peak RSS per rule, reads/s and tokens/s end to end, the GPU busy fraction, the disk
high-water mark, the plan's expected GPU time beside what the jobs took, and the resume.

``--kill-at 0`` runs once, uninterrupted (the end-to-end rate without a resume in it);
``--save-outputs DIR`` keeps what the run made (the result tables, a digest of every embedding
row, 1,000 rows in full) and ``--compare DIR`` compares this run's with them: a resumed run
against an uninterrupted one of the same reads, models and config (both are generated from
fixed seeds), in two calls of at most 10 minutes.

    python -m bench.workflow_gpu --reads 100000 --kill-at 0 --save-outputs $OUT/whole --out ...
    python -m bench.workflow_gpu --reads 100000 --compare whole --out ...   # kill, resume
    python -m bench.workflow_gpu --reads 300 --tiny --out /tmp/wf.json        # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT)


def prepare(work: Path, reads: int, tiny: bool, shards: str = "1") -> dict:
    """Reads, models and the config; the config mapping. Models already in ``work`` are kept
    (a second run in one call); ``shards`` "default" leaves the key to the schema."""
    fasta = work / "reads.fa"
    sh(sys.executable, "bench/make_reads.py", "--n", str(reads), "--min-len", "500",
       "--max-len", "500", "--kind", "realistic", "--seed", "3", "--duplicates", "0.1",
       "--out", str(fasta))  # fmt: skip
    extra = {}
    if tiny:  # small batches and commits, so that the kill lands midway
        models = {"dnabert": "tiny", "esm": "tiny"}
        extra = {"token_budget": {"dnabert": 4096, "esm": 1024}, "checkpoint_every": 20}
    else:
        if not (work / "models/esm2_t36_3B_UR50D.pt").is_file():
            sh(sys.executable, "-m", "bench.make_models", "--esm", "3B", "--dnabert", "full",
               "--out", str(work / "models"))  # fmt: skip
        models = {"dnabert": str(work / "models/dnabert_full"),
                  "esm": str(work / "models/esm2_t36_3B_UR50D.pt")}  # fmt: skip
    config = {"samples": {"gpu": str(fasta)}, "chunk_length": 500, "shards": 1,
              "models": models, "classifier": "tiny", "checkpoint_seconds": 10}  # fmt: skip
    config.update(extra)
    if shards == "default":
        del config["shards"]
    elif shards != "1":
        config["shards"] = int(shards)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return config


class Sampler(threading.Thread):
    """Disk use of the run folder (bytes), every ``every`` seconds; keeps the largest."""

    def __init__(self, folder: Path, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.every, self.peak, self.stop = (
            folder / "results",
            every,
            0,
            threading.Event(),
        )

    def used(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.folder):
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
        return total

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.peak = max(self.peak, self.used())


def snakemake(work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
            str(work), "--configfile", str(work / "config.yaml"), "--profile",
            str(ROOT / "profiles/local-2gpu"), "--resources", "gpu=1", "--cores", "all",
            *extra]  # fmt: skip


def job_pid(work_dir: Path) -> int | None:
    """The embed job writing ``work_dir``: the process holding its rows.bin open whose parent
    does not (its reader processes may still hold the file they inherited)."""

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


def first_run_killed(work: Path, kill_at: float, log) -> dict:
    """Run until the ESM-2 job has committed ``kill_at`` of its shard, then SIGKILL the job and
    Snakemake itself (a crashed node): what was committed and when."""
    proc = subprocess.Popen(snakemake(work), stdout=log, stderr=subprocess.STDOUT)
    progress = work / "results/gpu/work/esm/shard_0/progress.json"
    plan = work / "results/gpu/shards/plan.json"
    killed = {}
    while proc.poll() is None and not killed:
        time.sleep(0.5)
        if not (progress.exists() and plan.exists()):
            continue
        with contextlib.suppress(ValueError, OSError):
            rows = json.loads(progress.read_text())["rows"]
            total = json.loads(plan.read_text())["models"]["esm"]["distinct"][0]
            pid = job_pid(progress.parent)
            if rows >= kill_at * total and pid:
                os.kill(pid, signal.SIGKILL)
                proc.send_signal(signal.SIGKILL)  # Snakemake too: no retry, a stale lock
                killed = {"committed": rows, "distinct": total, "at": time.time()}
    proc.wait()
    return {**killed, "returncode": proc.returncode}


TABLES = ("prediction_results.tsv", "prediction_results_highestscore.tsv", "summary.tsv")
SAMPLE_ROWS = 1000


def save_outputs(work: Path, folder: Path) -> None:
    """The result tables, a sha256 of every embedding row, and ``SAMPLE_ROWS`` rows in full."""
    folder.mkdir(parents=True, exist_ok=True)
    sample = work / "results/gpu"
    for name in TABLES:
        (folder / name).write_bytes((sample / name).read_bytes())
    arrays = {}
    with h5py.File(sample / "features.h5") as f:
        for model in ("dnabert", "esm"):
            rows, digests = f[model], []
            for a in range(0, rows.shape[0], 8192):  # one array of 8-byte digests a block
                block = rows[a : a + 8192]
                one = b"".join(hashlib.sha256(r.tobytes()).digest()[:8] for r in block)
                digests.append(np.frombuffer(one, "<u8"))
            arrays[f"{model}_digests"] = np.concatenate(digests or [np.zeros(0, "<u8")])
            picks = np.linspace(0, rows.shape[0] - 1, min(SAMPLE_ROWS, rows.shape[0])).astype(int)
            arrays[f"{model}_rows"], arrays[f"{model}_picks"] = rows[np.unique(picks)], picks
    np.savez(folder / "embeddings.npz", **arrays)


def compare_outputs(work: Path, saved: Path) -> dict:
    """This run's outputs against ``save_outputs``'s of another run (see ``save_outputs``)."""
    mine = work / "saved"
    save_outputs(work, mine)
    out: dict = {"tables_identical": {}}
    for name in TABLES:  # compared in blocks, not read whole
        out["tables_identical"][name] = filecmp.cmp(mine / name, saved / name, shallow=False)
    out.update(compare_calls(mine / TABLES[0], saved / TABLES[0]))
    x, y = np.load(mine / "embeddings.npz"), np.load(saved / "embeddings.npz")
    for model in ("dnabert", "esm"):
        u, v = x[f"{model}_rows"].astype(np.float64), y[f"{model}_rows"].astype(np.float64)
        cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1) + 1e-30)
        out[model] = {
            "rows": int(x[f"{model}_digests"].size),
            "rows_identical": int((x[f"{model}_digests"] == y[f"{model}_digests"]).sum()),
            "sampled_rows": len(u), "sampled_min_cosine": float(cos.min()),
            "sampled_max_abs_diff": float(np.abs(u - v).max()),
        }  # fmt: skip
    return out


def compare_calls(a: Path, b: Path) -> dict:
    """Two prediction tables, line by line (same ids in the same order): verdicts that agree,
    and the largest difference of score1."""
    agree = calls = 0
    worst = 0.0
    with open(a) as x, open(b) as y:
        next(x), next(y)  # the headers
        for line_a, line_b in zip(x, y, strict=True):
            ra, rb = line_a.split("\t"), line_b.split("\t")
            if ra[0] != rb[0]:
                raise ValueError(f"line {calls + 2}: {ra[0]} in {a}, {rb[0]} in {b}")
            calls += 1
            agree += ra[1] == rb[1]
            worst = max(worst, abs(float(ra[2]) - float(rb[2])))
    return {"calls_agree": agree, "calls": calls, "max_score_diff": worst}


def planned(work: Path) -> dict[str, int]:
    out = subprocess.run(snakemake(work, "-n", "--quiet", "rules"), capture_output=True,
                         text=True).stdout  # fmt: skip
    jobs, table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
        elif table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs


def rules(work: Path) -> dict[str, dict]:
    """Per rule: wall seconds (summed over jobs, and each job's), the largest peak RSS, job
    count."""
    import csv

    out: dict[str, dict] = {}
    for path in sorted((work / "benchmarks").rglob("*.tsv")):
        rel = path.relative_to(work / "benchmarks").parts
        rule = rel[1] if len(rel) > 2 else rel[-1].removesuffix(".tsv")
        with open(path, newline="") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        r = out.setdefault(rule, {"wall_s": 0.0, "max_rss_mb": 0.0, "jobs": 0, "job_s": {}})
        r["wall_s"] = round(r["wall_s"] + float(row["s"]), 2)
        r["job_s"][path.stem] = round(float(row["s"]), 2)
        r["max_rss_mb"] = max(r["max_rss_mb"], float(row["max_rss"] or 0))
        r["jobs"] += 1
    return out


def shard_metrics(work: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((work / "results/gpu/embeddings").glob("*/shard_*.h5")):
        with h5py.File(path) as f:
            out[f"{path.parent.name}/{path.stem}"] = {
                k.removeprefix("metrics."): (v.item() if hasattr(v, "item") else str(v))
                for k, v in f.attrs.items() if k.startswith("metrics.") or k == "device"
            }  # fmt: skip
    return out


def bare_tokens_per_s(work: Path, config: dict, n: int = 8000) -> dict:
    """The bare ESM-2 model (the library's encoder, the job's settings) on the first ``n``
    distinct proteins of the sample: tokens/s of the forward passes alone."""
    import numpy as np
    import torch

    from virnuc_core.data.index import open_index
    from virnuc_core.engine.packing import make_batch, pack_ffd
    from virnuc_core.registry import family, load_encoder
    from virnuc_core.settings import WorkflowSettings
    from virnuc_core.util.fasta import read_sequences

    settings = WorkflowSettings.from_config(config).embed("esm")
    rows = open_index(work / "results/gpu/frames.index.npy").read(0, n)
    seqs = read_sequences(work / "results/gpu/proteins.faa", *family("esm").spans(rows))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_encoder(settings, device)
    tokens = encoder.tokenize(seqs)
    batches = [make_batch([tokens[i] for i in idx]).to(device)
               for idx in pack_ffd([len(t) for t in tokens], settings.token_budget)]  # fmt: skip
    for b in batches[:2]:  # warm up (compile, autotune)
        encoder.embed_packed(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches:
        encoder.embed_packed(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    total = int(np.sum([len(t) for t in tokens]))
    return {"proteins": len(seqs), "tokens": total, "seconds": round(seconds, 3),
            "tokens_per_s": round(total / seconds, 1)}  # fmt: skip


def gpu_samples(path: Path) -> dict:
    values, memory = [], []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError, IndexError):
            fields = line.split(",")
            util, used = float(fields[1]), float(fields[2])
            values.append(util)
            memory.append(used)
    if not values:
        return {"samples": 0}
    busy = sum(v > 0 for v in values) / len(values)
    return {"samples": len(values), "mean_utilization_pct": round(sum(values) / len(values), 1),
            "busy_fraction": round(busy, 3),
            "memory_used_peak_mib": max(memory, default=0)}  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reads", type=int, default=100_000)
    ap.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="kill the ESM-2 job at this fraction of its rows; 0: run uninterrupted",
    )
    ap.add_argument("--save-outputs", type=Path, help="keep what the run made here")
    ap.add_argument("--compare", type=Path, help="compare with what --save-outputs kept")
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (smoke run)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/virnuc-wf"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bare", type=int, default=8000, help="proteins for the bare-model rate")
    ap.add_argument(
        "--shards", default="1", help="the config's shards: a number, or 'default' (the schema's)"
    )
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        return run(a, stack)


def run(a, stack) -> int:
    t0 = time.time()
    config = prepare(a.work, a.reads, a.tiny, a.shards)
    setup_s = time.time() - t0
    smi = a.work / "nvidia-smi.csv"
    sampler_proc = None
    smi_out = stack.enter_context(open(smi, "w"))  # noqa: SIM115 - the stack closes it
    if not a.tiny:
        sampler_proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", "500"], stdout=smi_out)  # fmt: skip
    disk = Sampler(a.work)
    disk.start()
    start = time.time()
    killed, plan_after_kill = {}, {}
    if a.kill_at > 0:
        with open(a.work / "run1.log", "w") as log:
            killed = first_run_killed(a.work, a.kill_at, log)
        subprocess.run(snakemake(a.work, "--unlock"), capture_output=True)  # the lock it left
        plan_after_kill = planned(a.work)
    mid = time.time()
    with open(a.work / "run2.log", "w") as log:
        second = subprocess.run(snakemake(a.work), stdout=log, stderr=subprocess.STDOUT)
    end = time.time()
    disk.stop.set()
    if sampler_proc:
        sampler_proc.terminate()
    doc = summarize(a, config, killed, plan_after_kill, second.returncode, (t0, setup_s, start,
                    mid, end), disk, smi)  # fmt: skip
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    if a.save_outputs and second.returncode == 0:
        save_outputs(a.work, a.save_outputs)
    if a.compare and second.returncode == 0:
        doc["resume"]["compared_to_uninterrupted"] = compare_outputs(a.work, a.compare)
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    if a.bare:
        doc["bare_esm"] = bare_tokens_per_s(a.work, config, a.bare)
        doc["end_to_end_vs_bare"] = round(doc["esm_tokens_per_s_end_to_end"]
                                          / doc["bare_esm"]["tokens_per_s"], 3)  # fmt: skip
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in ("rules", "shards")}, indent=1))
    return 0 if second.returncode == 0 else 1


def summarize(a, config, killed, plan_after_kill, rc, times, disk, smi) -> dict:
    t0, setup_s, start, mid, end = times
    work = a.work / "results/gpu"
    counts = json.loads((work / "frames.counts.json").read_text())
    run_plan = json.loads((work / "plan.json").read_text())
    shards = shard_metrics(a.work)
    log2 = (a.work / "logs/gpu/embed_shard/esm_0.log").read_text()
    resumed = [line for line in log2.splitlines() if "resuming:" in line or "starting:" in line]
    esm_tokens = run_plan["models"]["esm"]["tokens"]
    wall = end - start
    import torch

    return {
        "machine": {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%F %T"),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                    "torch": torch.__version__,
                    "pycache_prefix": os.environ.get("PYTHONPYCACHEPREFIX", "")},  # fmt: skip
        "reads": counts["reads"], "frames": counts["frames"], "config": config,
        "interrupted": a.kill_at > 0, "setup_s": round(setup_s, 1), "wall_s": round(wall, 1),
        "first_run_s": round(mid - start, 1), "rerun_s": round(end - mid, 1),
        "reads_per_s": round(counts["reads"] / wall, 1),
        "esm_tokens": esm_tokens, "esm_tokens_per_s_end_to_end": round(esm_tokens / wall, 1),
        "gpu": gpu_samples(smi), "disk_peak_bytes": disk.peak, "disk_final_bytes": disk.used(),
        "embedding_bytes": counts["frames"] * 4 * sum(
            p["width"] or 0 for p in run_plan["models"].values()),
        "plan": run_plan["models"], "rules": rules(a.work), "shards": shards,
        "resume": {"killed": killed, "planned_after_kill": plan_after_kill,
                   "resumed_log": resumed, "rerun_returncode": rc},
        "validation": json.loads((work / "validation/summary.json").read_text()),
    }  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
