"""What the shard files' checksums and the readers' NaN check cost the CPU rules (issue 34).

Synthetic rows at the real widths (ESM-2 3B 2560, DNABERT-S 768, float32), ``--frames`` frames
in ``--shards`` shards per model; then, alternating between two copies of ``virnuc_core`` (this
tree's, and ``--base``: an export of the commit before, e.g.
``git archive af59fb7 virnuc_core | tar -x -C /tmp/integrity_base``), each step in a fresh
process on one thread: finalize_shard of every shard, write_features, and predict_sample with a
VirNucPro-sized classifier (3328 -> 512 -> 2, random weights). Figures: wall and CPU seconds per
step, medians over ``--repeats``. Run from the repository root:

    python -m bench.integrity_cost --base /tmp/integrity_base --dir /tmp/integrity
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIMS = {"dnabert": 768, "esm": 2560}

STEP = r"""
import json, sys, time, os
import torch
torch.set_num_threads(1)
from pathlib import Path
from virnuc_core.jobs.finalize import finalize_shard
from virnuc_core.jobs.merge import write_features
from virnuc_core.report.predictions import predict_sample
step, data, out = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
setup = json.loads((data / "setup.json").read_text())
out.mkdir(parents=True, exist_ok=True)
shards = {m: [str(out / f"{m}_{i}.h5") for i in range(setup["shards"])] for m in setup["dims"]}
t0, c0 = time.perf_counter(), time.process_time()
if step == "finalize":
    for m, paths in shards.items():
        for i, path in enumerate(paths):
            finalize_shard(data / f"{m}_{i}.rows", data / "sources.npy", [], path)
elif step == "features":
    write_features(shards, data / "i.npy", data / "frames.fa", out / "features.h5")
else:
    predict_sample(out / "features.h5", str(data / "classifier.pth"), out / "p.tsv", out / "h.tsv")
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
"""


def make_data(folder: Path, frames: int, shards: int) -> None:
    """Rows directories (as the embed jobs leave them), the index, frames.fa, a classifier."""
    from virnuc_core.data.frames import FrameBatch
    from virnuc_core.data.index import write_index
    from virnuc_core.engine.models.classify import MLPClassifier, save_state
    from virnuc_core.jobs.store import ShardCheckpoint
    from virnuc_core.util.npyfile import write_npy

    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"read{i // 6}_chunk_1F{1 + i % 6}" for i in range(frames)]
    batch = FrameBatch(ids, ["ACGT" * 125] * frames, ["M" * 166] * frames, frames, frames,
                       np.arange(frames), np.zeros(frames, np.int32),
                       np.zeros(frames, np.uint8))  # fmt: skip
    write_index([batch], folder / "frames.fa", folder / "proteins.faa", folder / "i.npy")
    with open(folder / "sources.npy", "wb") as handle:
        write_npy(handle, np.arange(frames, dtype=np.int64))
    bounds = np.linspace(0, frames, shards + 1).astype(int)
    rng = np.random.default_rng(0)
    for model, dim in DIMS.items():
        for i in range(shards):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            work = folder / f"{model}_{i}.work"
            ckpt = ShardCheckpoint.open(work, "fp", dim, lo, hi, every_records=1 << 30)
            for a in range(lo, hi, 4096):
                b = min(hi, a + 4096)
                rows = rng.standard_normal((b - a, dim), dtype=np.float32) * 0.1
                ckpt.append(np.arange(a, b), rows)
            ckpt.commit()
            meta = {"attrs": {"model": model, "device": "cuda"}, "metrics": {}}
            ckpt.complete(folder / f"{model}_{i}.rows", meta)
    save_state(MLPClassifier(sum(DIMS.values()), 512).eval(), folder / "classifier.pth")
    setup = {"frames": frames, "shards": shards, "dims": DIMS}
    (folder / "setup.json").write_text(json.dumps(setup))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="folder holding the other virnuc_core")
    ap.add_argument("--dir", required=True, help="scratch folder (about 4.5 GB at 85,000)")
    ap.add_argument("--frames", type=int, default=85_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="write the figures to this JSON file")
    args = ap.parse_args()
    scratch = Path(args.dir)
    data = scratch / "data"
    if not (data / "setup.json").exists():
        make_data(data, args.frames, args.shards)
    trees = {"without": str(Path(args.base).resolve()), "with": str(REPO)}
    times: dict = {t: {s: [] for s in ("finalize", "features", "predict")} for t in trees}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for r in range(args.repeats):
        for tree in trees if r % 2 == 0 else reversed(trees):
            for step in ("finalize", "features", "predict"):
                argv = [sys.executable, "-P", "-c", STEP, trees[tree], step, str(data),
                        str(scratch / tree)]  # fmt: skip
                tree_env = {**env, "PYTHONPATH": trees[tree]}  # that tree's virnuc_core
                got = json.loads(subprocess.run(argv, env=tree_env, capture_output=True, text=True,
                                                check=True).stdout.splitlines()[-1])  # fmt: skip
                times[tree][step].append(got)
                print(r, tree, step, got, flush=True)
    summary = {
        tree: {
            step: {k: round(statistics.median(x[k] for x in runs), 3) for k in ("wall_s", "cpu_s")}
            for step, runs in steps.items()
        }
        for tree, steps in times.items()
    }
    ratio = {
        step: round(summary["with"][step]["cpu_s"] / summary["without"][step]["cpu_s"], 3)
        for step in summary["with"]
    }
    result = {"frames": args.frames, "shards": args.shards, "dims": DIMS, "median": summary,
              "cpu_ratio_with_over_without": ratio, "runs": times,
              "load_avg_at_end": os.getloadavg()}  # fmt: skip
    print(json.dumps({"median": summary, "cpu_ratio": ratio}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
