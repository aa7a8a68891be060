"""The real workflow at several sizes on the CPU: peak memory and CPU time per rule, disk.

Each size is a fresh run of the real Snakefile (every rule, through predict, the summary and
the report figures) on 500-base reads with a realistic frame mix (``bench/make_reads.py``,
kind ``realistic``, 10% of the reads repeated under new ids). The embedding models are the
documented stand-in (``models: standin``, :mod:`virnuc_core.engine.models.standin`): rows of the
real widths (768 DNABERT-S, 2560 ESM-2 3B) written through the real reader, packer, checkpoint
store, finalize and merge code; everything else is the real rule. Per rule, Snakemake's own
benchmark files give CPU seconds and a sampled RSS; the exact peaks come from the kernel
(``bench/peaks/sitecustomize.py``: each job's own high-water mark at exit, and its largest
child's, such as a reader process); a sampler records the disk high-water mark of the run folder.
The result: per rule the slope in bytes per kept frame between sizes, and the projection to
10 M reads.

    python -m bench.scale --reads 250000 1000000 2000000 \
        --out bench/results/2026-12-02-scale-cpu/scale_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from bench.make_reads import make_reads
from virnuc_core.jobs.resources import MEASURED, mem_mb

ROOT = Path(__file__).resolve().parents[1]

WIDTH = 768 + 2560
PROJECT_READS = 10_000_000


def write_reads(path: Path, n: int, seed: int = 11, block: int = 100_000) -> None:
    """``n`` mixed 500-base reads, 10% of them again later under new ids, written in blocks."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for start in range(0, n, block):
            k = min(block, n - start)
            reads = make_reads(
                k, 500, 500, kind="realistic", seed=seed + start, prefix=f"r{start}_"
            )
            again = rng.choice(k, k // 10, replace=False)
            reads += [(f"dup{start}_{j}", reads[j][1]) for j in again.tolist()]
            out.writelines(f">{h}\n{s}\n" for h, s in reads)


def write_long(path: Path, bases: int, seed: int = 5, width: int = 60) -> None:
    """One record of ``bases`` bases (realistic 500-base reads end to end: a contig or a
    chromosome with about one kept frame a chunk), wrapped at ``width``."""
    block = 100_000
    with open(path, "w") as out:
        out.write(f">long{bases} one record of {bases} bases\n")
        carry, left = "", bases
        while left:
            k = min(block, -(-left // 500))
            reads = make_reads(k, 500, 500, kind="realistic", seed=seed + left, prefix="x")
            text = carry + "".join(s for _, s in reads)[:left]
            left -= len(text) - len(carry)
            cut = len(text) if not left else len(text) - len(text) % width
            out.writelines(text[i : i + width] + "\n" for i in range(0, cut, width))
            carry = text[cut:]


def config(reads: Path, shards: int) -> dict:
    return {
        "samples": {"s": str(reads)},
        "chunk_length": 500,
        "shards": shards,
        "models": {"dnabert": "standin", "esm": "standin"},
        "precision": "fp32",
        "reader_workers": 1,
        "classifier": "tiny",
        "validate": {"n": 200, "mean_cosine": 0.999, "min_cosine": 0.99, "seed": 0},
    }


class DiskSampler(threading.Thread):
    """The largest number of bytes the folder held, sampled every ``every`` seconds."""

    def __init__(self, folder: Path, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.every, self.peak, self.done = folder, every, 0, threading.Event()

    def used(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.folder):
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
        return total

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, self.used())


def rule_figures(workdir: Path, peaks: Path) -> dict[str, dict]:
    """Per rule: the largest exact peak RSS of its jobs (MB: own process plus its largest
    child), Snakemake's sampled one, their CPU seconds summed, job count."""
    out: dict[str, dict] = defaultdict(
        lambda: {"max_rss_mb": 0.0, "own_max_rss_mb": 0.0, "children_max_rss_mb": 0.0,
                 "sampled_max_rss_mb": 0.0, "cpu_s": 0.0, "jobs": 0}
    )  # fmt: skip
    for path in peaks.glob("*.json"):
        job = json.loads(path.read_text())
        fig = out[job["rule"]]
        own, kids = job["max_rss_mb"], job["children_max_rss_mb"]
        fig["max_rss_mb"] = round(max(fig["max_rss_mb"], own + kids), 2)
        fig["own_max_rss_mb"] = round(max(fig["own_max_rss_mb"], own), 2)
        fig["children_max_rss_mb"] = round(max(fig["children_max_rss_mb"], kids), 2)
    for path in (workdir / "benchmarks").rglob("*.tsv"):
        rel = path.relative_to(workdir / "benchmarks").parts
        rule = rel[1] if len(rel) > 2 else rel[-1].removesuffix(".tsv")
        with open(path, newline="") as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        fig = out[rule]
        fig["sampled_max_rss_mb"] = max(fig["sampled_max_rss_mb"], float(row["max_rss"] or 0))
        fig["cpu_s"] += float(row["cpu_time"] or 0)
        fig["jobs"] += 1
    return dict(out)


def run_size(n: int, base: Path, shards: int, cores: int, long: bool = False) -> dict:
    """The workflow on ``n`` reads, or (``long``) on one record of ``n`` bases."""
    work = base / (f"long{n}" if long else f"n{n}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    reads = base / (f"long_{n}.fa" if long else f"reads_{n}.fa")
    if not reads.exists():
        (write_long if long else write_reads)(reads, n)
    (work / "config.yaml").write_text(yaml.safe_dump(config(reads, shards)))
    sampler = DiskSampler(work)
    sampler.start()
    start = time.time()
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        "--cores",
        str(cores),
        "-q",
    ]
    peaks = work / "peaks"
    peaks.mkdir()
    env = {**os.environ, "VIRNUC_BENCH_PEAKS": str(peaks),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench" / "peaks"),
                                                       os.environ.get("PYTHONPATH")]))}  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - start
    sampler.done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(
            f"snakemake failed at {n} reads:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    counts = json.loads((work / "results/s/frames.counts.json").read_text())
    result = {
        "input": f"one record of {n:,} bases" if long else f"{n:,} reads of 500 bases + 10%",
        "reads": counts["reads"],
        "frames": counts["frames"],
        "wall_s": round(wall, 1),
        "embedding_bytes": counts["frames"] * WIDTH * 4,
        "disk_peak_bytes": sampler.peak,
        "disk_final_bytes": sampler.used(),
        "rules": rule_figures(work, peaks),
    }
    result["reservations_mb"] = {
        r: asked_mb(r, counts["frames"]) for r in result["rules"] if r in MEASURED
    }
    result["disk_peak_over_embeddings"] = round(sampler.peak / max(1, result["embedding_bytes"]), 3)
    shutil.rmtree(work)  # the next size needs the disk
    return result


def slopes(runs: list[dict]) -> dict[str, dict]:
    """Per rule: bytes of peak RSS per kept frame between the two largest sizes, and the
    projection to 10 M reads."""
    a, b = runs[-2], runs[-1]
    frames_10m = b["frames"] / b["reads"] * PROJECT_READS
    out = {}
    for rule in b["rules"]:
        ra, rb = a["rules"].get(rule), b["rules"][rule]
        if ra is None:
            continue
        per_frame = (rb["max_rss_mb"] - ra["max_rss_mb"]) * 1e6 / (b["frames"] - a["frames"])
        cpu = (rb["cpu_s"] - ra["cpu_s"]) / (b["frames"] - a["frames"])
        out[rule] = {
            "bytes_per_frame": round(per_frame, 1),
            "projected_rss_mb_10M_reads": round(
                rb["max_rss_mb"] + max(0.0, per_frame) * (frames_10m - b["frames"]) / 1e6, 1
            ),
            "cpu_s_per_million_frames": round(cpu * 1e6, 1),
        }
    return out


PLAN_JOB = """
import json, os, sys
from virnuc_core.jobs.plan import plan_shards, read_plan
from virnuc_core.jobs.run_plan import run_plan
def hwm():
    with open("/proc/self/status") as status:
        return next(int(x.split()[1]) for x in status if x.startswith("VmHWM:")) / 1024
d, before = sys.argv[1], hwm()
seqs = {"dnabert": f"{d}/frames.fa", "esm": f"{d}/proteins.faa"}
plan_shards(f"{d}/frames.index.npy", seqs, 4, True, f"{d}/plan.json",
            {m: f"{d}/{m}.sources.npy" for m in seqs})
run_plan("s", read_plan(f"{d}/plan.json"), {"dnabert": "standin", "esm": "standin"}, 0)
print(json.dumps({"imports_mb": round(before, 1), "max_rss_mb": round(hwm(), 1)}))
"""


def plan_alone(frames: int, base: Path) -> dict:
    """plan_shards' own function (dedupe on, 4 shards, then the run plan) in a fresh process,
    on an index of ``frames`` frames: 60-base reads with all six frames open (short sequences:
    the plan's memory is per frame; the sequences are read in fixed blocks), 10% repeated."""
    from virnuc_core.data.index import index_sample

    work = base / f"plan{frames}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n = frames // 6
    reads = make_reads(n - n // 10, 60, 60, kind="open", seed=3, prefix="o")
    reads += [(f"dup{i}", s) for i, (_, s) in enumerate(reads[: n // 10])]
    with open(work / "reads.fa", "w") as out:
        out.writelines(f">{h}\n{s}\n" for h, s in reads)
    del reads
    names = {"frames": "frames.fa", "proteins": "proteins.faa", "index": "frames.index.npy",
             "counts": "frames.counts.json"}  # fmt: skip
    counts = index_sample(
        [str(work / "reads.fa")], 500, {k: str(work / v) for k, v in names.items()}
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PLAN_JOB, str(work)], capture_output=True,
                         text=True, env=env, check=True)  # fmt: skip
    peak = json.loads(run.stdout.strip().splitlines()[-1])
    shutil.rmtree(work)
    return {"frames": counts.frames, **peak,
            "reservation_mb": mem_mb("plan_shards", counts.frames)}  # fmt: skip


MEMORY_RULES = ("index_fasta", "plan_shards", "summarize_sample")


def asked_mb(rule: str, frames: int) -> int:
    """What the rule asks for; for index_fasta (which asks by its input files' size) the least
    it asks, that of an empty input."""
    return mem_mb(rule, 0 if rule == "index_fasta" else frames)


def memory_table(runs: list[dict]) -> list[dict]:
    """Per run and rule of :data:`MEMORY_RULES`: the exact peak RSS and the reservation."""
    return [
        {"rule": rule, "input": run["input"], "frames": run["frames"],
         "peak_rss_mb": run["rules"][rule]["max_rss_mb"],
         "reservation_mb": run["reservations_mb"][rule]}
        for run in runs for rule in MEMORY_RULES if rule in run["rules"]
    ]  # fmt: skip


def print_table(doc: dict) -> None:
    """The memory rows of ``doc`` with each rule's reservation by the current resources.py."""
    rows = memory_table(doc.get("runs", []) + doc.get("long_records", []))
    rows += [{"rule": "plan_shards", "input": f"alone: index of {p['frames']:,} frames",
              "frames": p["frames"], "peak_rss_mb": p["max_rss_mb"]}
             for p in doc.get("plan_alone", [])]  # fmt: skip
    for row in rows:
        rule, where, peak = row["rule"], row["input"], row["peak_rss_mb"]
        mb = asked_mb(rule, row["frames"])
        print(f"{rule:18s} {where:38s} {row['frames']:>10,} frames {peak:8.1f} MB peak "
              f"{mb:6d} MB reserved (x{mb / peak:.2f})")  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reads", type=int, nargs="*", default=[250_000, 1_000_000])
    ap.add_argument("--long", type=int, nargs="*", default=[30_000_000, 300_000_000],
                    help="one run per length: one FASTA record of this many bases")  # fmt: skip
    ap.add_argument("--plan-frames", type=int, nargs="*", default=[1_000_000, 4_000_000],
                    help="plan_shards alone on an index of this many frames")  # fmt: skip
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/virnuc-scale"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="*", default=[],
                    help="print these results' memory table (today's mem_mb)")  # fmt: skip
    a = ap.parse_args(argv)
    if a.table:
        for path in a.table:
            print_table(json.loads(path.read_text()))
        return 0
    if a.out is None:
        ap.error("--out is required")
    runs, long_runs, plans = [], [], []
    doc: dict = {}
    sizes = [(n, "reads") for n in sorted(a.reads)] + [(n, "long") for n in sorted(a.long)]
    sizes += [(n, "plan") for n in sorted(a.plan_frames)]
    for n, kind in sizes:
        if kind == "plan":
            plans.append(plan_alone(n, a.workdir))
            print(json.dumps(plans[-1]), flush=True)
        else:
            long = kind == "long"
            (long_runs if long else runs).append(run_size(n, a.workdir, a.shards, a.cores, long))
            last = (long_runs if long else runs)[-1]
            print(json.dumps({k: v for k, v in last.items() if k != "rules"}), flush=True)
        doc = {
            "machine": {"command": " ".join(["python", *sys.argv]), "cpu": platform.processor(),
                        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")},
            "embedding": "stand-in (virnuc_core.engine.models.standin): random rows of the real "
            "widths "
            "through the real store code; every other rule is the real one",
            "runs": runs,
            "long_records": long_runs,
            "plan_alone": plans,
            "memory": memory_table(runs + long_runs),
        }  # fmt: skip
        if len(runs) >= 2:
            doc["slopes"] = slopes(runs)
        if len(plans) >= 2:
            p, q = plans[-2], plans[-1]
            doc["plan_alone_bytes_per_frame"] = round(
                (q["max_rss_mb"] - p["max_rss_mb"]) * 1e6 / (q["frames"] - p["frames"]), 1
            )
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    for rule, s in doc.get("slopes", {}).items():
        print(f"{rule:22s} {s['bytes_per_frame']:9.1f} B/frame  -> "
              f"{s['projected_rss_mb_10M_reads']:9.1f} MB at 10M reads")  # fmt: skip
    print_table(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
