"""Each rule's memory, from measurements: a constant plus bytes per kept frame of the sample.

The constants and slopes are what ``bench/scale.py`` measured (``bench/results/scale_cpu.json``:
peak RSS per rule at two sizes) with a margin, so that a SLURM job is never killed for memory
it needs nor reserves ten times too much. The GPU jobs' constant is the model's host memory
while it loads (ESM-2 3B: the checkpoint and fair-esm's fp32 build), from the GPU run
(``bench/results/workflow_gpu_h200.json``). The rules pass these as ``mem_mb``; the run plan
lists them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

INDEX_ROW_BYTES = 41  # one frame in frames.index.npy (virnuc_core.index.INDEX_DTYPE)
MARGIN = 1.5

# rule -> (MB, bytes per kept frame of the sample), before the margin
MEASURED = {
    "index_fasta": (300, 0),
    "plan_shards": (300, 120),
    "embed_shard": (20000, 0),
    "finalize_shard": (600, 0),
    "features": (400, 0),
    "validate_embeddings": (20000, 0),
    "validation_summary": (600, 0),
    "predict": (800, 0),
    "summarize_sample": (300, 0),
    "report_figures": (400, 0),
    "verify_models": (200, 0),
}


def mem_mb(rule: str, frames: int) -> int:
    """The memory to reserve for ``rule`` on a sample of ``frames`` kept frames (MB)."""
    base, per_frame = MEASURED[rule]
    return int(math.ceil(MARGIN * (base + per_frame * frames / 1e6)))


def frames_of(paths: Iterable[str]) -> int:
    """Kept frames of a sample, from the size of its frames.index.npy among ``paths`` (0 when
    it does not exist yet: Snakemake asks again once it does)."""
    for path in paths:
        if str(path).endswith("frames.index.npy") and os.path.exists(path):
            return os.path.getsize(path) // INDEX_ROW_BYTES
    return 0


def plan_table(frames: int) -> dict[str, int]:
    """Every rule's memory (MB) for a sample of ``frames`` frames."""
    return {rule: mem_mb(rule, frames) for rule in MEASURED}
