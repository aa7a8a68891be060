"""Each rule's memory, from measurements: a constant plus bytes per kept frame of the sample
(per read for index_fasta, which runs before any frame exists: :func:`grows_with`).

The constants and slopes are what ``bench/scale.py`` measured (peak RSS per rule at several
sample sizes, on records of 30 and 300 megabases, and plan_shards alone on indexes of 1 M, 4 M
and 25 M frames: :data:`SOURCES`) with a margin, so that a SLURM job is never killed for memory it
needs nor reserves ten times too much. The GPU jobs' constant is the model's host memory while it
loads (ESM-2 3B: the checkpoint and fair-esm's fp32 build), from the GPU run
(``bench/results/workflow_gpu_h200.json``). The rules pass these as ``mem_mb``; the run plan
lists them (``job_memory_mb``) and what they stand on (``job_memory_basis``: :func:`basis`).

Long records cost no more than reads: a FASTA record's bases go to disk while it is read
(:mod:`virnuc_core.long_records`), so index_fasta and summarize_sample peaked at the same 83 and
138 MB on a 30- and a 300-megabase record (909 and 802 MB before).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

from virnuc_core.npyfile import NpyReader

MARGIN = 1.5
# index_fasta's reads, estimated from the input files: decompressed bytes of one read's record
# (a FASTQ record of a 75-base read with a 60-character header is about 216) and the ratio of
# decompressed to compressed reads (gzip of FASTQ or FASTA: about 3 to 4.5).
RECORD_BYTES = 200
COMPRESSION = 4
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")

# rule -> (MB, bytes per kept frame of the sample; per read for index_fasta), before the margin.
# From bench/results/scale_cpu.json (250 k, 1 M and 2 M reads) and 2026-12-06-scale-cpu/ (100 k and
# 300 k reads, records of 30 and 300 megabases; plan_shards alone at 1 M and 4 M frames): MB =
# the largest exact peak measured (the job's own high-water mark plus its largest child's),
# bytes = the steeper slope, rounded up; 0 where memory did not grow. GPU jobs: the ESM-2 3B
# job's host peak while fair-esm builds the model (16.8 GB, workflow_gpu_h200.json), rounded up.
MEASURED = {
    "index_fasta": (100, 32),  # per read (27 then 16 measured); 83 MB on a 300-Mb record
    "plan_shards": (180, 56),  # the duplicate digests and their sort: 1,492 MB at 25 M frames
    "embed_shard": (20000, 17),
    "finalize_shard": (300, 5),
    "features": (200, 1),
    "validation_sample": (120, 32),  # the lengths column and its argsort
    "validate_embeddings": (20000, 0),  # loads the model only for rows the embed jobs lack
    "validation_summary": (320, 0),
    "predict": (710, 0),
    "summarize_sample": (140, 0),  # 138 MB on a 30- and a 300-megabase record, 103 on reads
    "report_figures": (150, 0),
    "verify_models": (200, 0),
}

SOURCES = (
    "bench/results/scale_cpu.json",
    "bench/results/2026-12-06-scale-cpu/scale_cpu.json",
    "bench/results/2026-12-06-scale-cpu/plan_cpu.json",
    "bench/results/2026-12-06-scale-cpu/plan_25m_cpu.json",
    "bench/results/workflow_gpu_h200.json",
)
NOTES = {
    "plan_shards": "grows with the sample: 37 bytes of peak RSS per kept frame between 1 M and "
    "4 M frames (198 and 310 MB, plan_cpu.json), 1,492 MB at 25 M frames (plan_25m_cpu.json: "
    "60 bytes a frame; it asks 2,370); 443 MB at 6.65 M frames (issue 34), about 60 "
    "bytes a frame over the interpreter: the duplicate digests (16 bytes a frame), their sort "
    "order and sorted copy, the offset and length columns",
    "index_fasta": "grows with the reads, not the frames (the duplicate-id hashes: 16-24 "
    "bytes a read; 57, 79, 97 MB at 275 k, 1.1 M, 2.2 M reads): its job asks by the reads "
    "estimated from the input files (bytes x4 when compressed, over 200 bytes a read); this "
    "table's figure counts the frames instead. 83 MB on a 300-megabase record",
    "summarize_sample": "flat: 103 MB on reads, 138 MB on long records (the record streamed "
    "from disk, its prediction rows tallied as they pass)",
}


def mem_mb(rule: str, frames: int) -> int:
    """The memory to reserve for ``rule`` on a sample of ``frames`` kept frames (MB)."""
    base, per_frame = MEASURED[rule]
    return int(math.ceil(MARGIN * (base + per_frame * frames / 1e6)))


def reads_of(paths: Iterable[str]) -> int:
    """A generous estimate of the reads in a sample's input files, before anything has read
    them: their bytes (times :data:`COMPRESSION` when gzip, bzip2 or xz) over
    :data:`RECORD_BYTES` a read."""
    total = 0
    for path in map(str, paths):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                packed = handle.read(6).startswith(_COMPRESSED)
            total += os.path.getsize(path) * (COMPRESSION if packed else 1)
    return total // RECORD_BYTES


def grows_with(rule: str, paths: Iterable[str]) -> int:
    """What ``rule``'s memory grows with, from its input ``paths``: for index_fasta (its input
    is the reads; no frame exists yet) the estimated reads (:func:`reads_of`: its duplicate-id
    check keeps 16-24 bytes a read), for every other rule the kept frames (:func:`frames_of`)."""
    paths = list(paths)
    return reads_of(paths) if rule == "index_fasta" else frames_of(paths)


def frames_of(paths: Iterable[str]) -> int:
    """Kept frames of a sample: the row count in the header of its frames.index.npy, or of a
    ``{model}.sources.npy`` (one row per frame too), among ``paths``; 0 when neither exists
    yet (Snakemake asks again once it does)."""
    for path in paths:
        name = str(path)
        if name.endswith(("frames.index.npy", ".sources.npy")) and os.path.exists(name):
            return NpyReader(name).rows
    return 0


def basis() -> dict:
    """What the reservations stand on, for the run plan: the formula, the measured figures
    per rule and where they were measured."""
    return {
        "formula": f"ceil({MARGIN} * (mb + bytes_per_frame * frames / 1e6))",
        "measured": {r: {"mb": mb, "bytes_per_frame": b} for r, (mb, b) in MEASURED.items()},
        "sources": list(SOURCES),
        "notes": dict(NOTES),
    }


def plan_table(frames: int) -> dict[str, int]:
    """Every rule's memory (MB) for a sample of ``frames`` frames."""
    return {rule: mem_mb(rule, frames) for rule in MEASURED}
