"""The index stage (rule index_fasta) on one CPU core: reads per CPU second, and where it goes.

Runs the rule's own function (:func:`virnuc_core.data.index.index_sample`: read + chunk + six-frame
selection + its outputs) on generated 500-base reads, and profiles it (cProfile) to say where
the time goes. CPU time (``time.process_time``), so other load on the machine counts less; the
median of ``--repeats`` runs (this shared machine's speed varies by up to 20% between runs).

    python bench/index_fasta.py --reads 1000000 \
        --out bench/results/2026-12-02-index-fasta-cpu/index_fasta_cpu.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(reads: Path, work: Path) -> tuple[float, dict]:
    from virnuc_core.data.index import index_sample

    out = {k: str(work / v) for k, v in {
        "frames": "frames.fa", "proteins": "proteins.faa", "index": "frames.index.npy",
        "counts": "frames.counts.json"}.items()}  # fmt: skip
    start = time.process_time()
    counts = index_sample([str(reads)], 500, out)
    return time.process_time() - start, counts.as_dict()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reads", type=int, default=1_000_000)
    ap.add_argument("--kind", default="realistic")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        reads = Path(tmp) / "reads.fa"
        subprocess.run([sys.executable, str(ROOT / "bench/make_reads.py"), "--n", str(a.reads),
                        "--min-len", "500", "--max-len", "500", "--kind", a.kind, "--seed", "7",
                        "--out", str(reads)], check=True)  # fmt: skip
        os.sync()  # the reads' dirty pages written out before timing
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
        # a fresh folder each time: renaming over an old output makes ext4 flush it at once
        runs = [run(reads, Path(tempfile.mkdtemp(dir=tmp))) for _ in range(a.repeats)]
        seconds, counts = sorted(runs)[len(runs) // 2]  # the median run
        profile = cProfile.Profile()
        profile.enable()
        run(reads, Path(tempfile.mkdtemp(dir=tmp)))
        profile.disable()
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())
    where = sorted(((v[2], f"{k[0].rsplit('/', 1)[-1]}:{k[2]}") for k, v in stats.stats.items()),
                   reverse=True)[:12]  # fmt: skip
    doc = {
        "machine": {"command": " ".join(["python", *sys.argv]), "cpu": platform.processor(),
                    "date": time.strftime("%F"), "load": os.getloadavg()},  # fmt: skip
        "reads": a.reads, "kind": a.kind, "counts": counts, "cpu_s": round(seconds, 2),
        "reads_per_cpu_s": round(a.reads / seconds),
        "reads_per_cpu_s_each_run": [round(a.reads / t) for t, _ in runs],
        "own_time_share": {name: round(t / total, 3) for t, name in where},
    }  # fmt: skip
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
