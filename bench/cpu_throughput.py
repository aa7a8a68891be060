"""ESM-2 3B's tokens/s on one CPU core: what a run without a visible GPU can expect.

Building the whole 3B model (12 GB of fp32 weights) is not needed to time it: its 36 layers are
alike, so the bench times random ESM-2 models of the 3B's width (2560, 40 heads) with ``--few``
and ``--many`` layers on batches of 500-base chunks' proteins (166 residues, 168 tokens), and
counts the 3B as 36 / ``--many`` times the ``--many``-layer model (the few-layer one gives the
per-layer time, to see the fixed part this scaling overcounts). fp32, inference mode, one thread.
Run from the repository root:

    python -m bench.cpu_throughput \
        --out bench/results/2026-12-06-cpu-throughput-cpu/cpu_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

LAYERS_3B, WIDTH_3B, HEADS_3B = 36, 2560, 40


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def seconds_per_batch(layers: int, batch: int, residues: int, repeats: int) -> float:
    from virnuc_core.engine.models.esm2_load import random_model

    model, alphabet = random_model(seed=0, num_layers=layers, embed_dim=WIDTH_3B,
                                   attention_heads=HEADS_3B)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    aa = torch.randint(4, 24, (batch, residues), generator=g)  # the 20 standard residues
    bos = torch.full((batch, 1), alphabet.cls_idx)
    eos = torch.full((batch, 1), alphabet.eos_idx)
    tokens = torch.cat([bos, aa, eos], dim=1)
    times = []
    with torch.inference_mode():
        model(tokens, repr_layers=[layers])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(tokens, repr_layers=[layers])
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--few", type=int, default=1)
    ap.add_argument("--many", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--residues", type=int, default=166)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    few = seconds_per_batch(args.few, args.batch, args.residues, args.repeats)
    many = seconds_per_batch(args.many, args.batch, args.residues, args.repeats)
    per_layer = (many - few) / (args.many - args.few)
    fixed = few - args.few * per_layer
    tokens = args.batch * (args.residues + 2)
    batch_3b = many * LAYERS_3B / args.many
    row = {"model": "esm", "architecture": "ESM-2 3B", "tokens_per_s": tokens / batch_3b}
    doc = {
        "what": __doc__.split("\n")[0],
        "machine": {
            "cpu": _cpu_name(),
            "threads": 1,
            "torch": torch.__version__,
        },  # fmt: skip
        "command": "python -m bench.cpu_throughput "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
        "seconds_per_batch": {
            f"{args.few}_layers": few,
            f"{args.many}_layers": many,
            "per_layer": per_layer,
            "fixed": fixed,
            "3B_estimated": batch_3b,
        },  # fmt: skip
        "load_average_1min_at_end": os.getloadavg()[0],
        "tokens_per_batch": tokens,
        "rows": [row],
    }
    print(json.dumps(doc, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
