"""Each rule's memory, from measurements: a constant plus bytes per kept frame of the sample
(per read for index_fasta, which runs before any frame exists: :func:`grows_with`).

The constants and slopes are what ``bench/scale.py`` measured (peak RSS per rule at several
sample sizes, on records of 30 and 300 megabases, and plan_shards alone on indexes of 1 M, 4 M
and 25 M frames: :data:`SOURCES`) with a margin, so that a SLURM job is never killed for memory it
needs nor reserves ten times too much. The GPU jobs' constant is the model's host memory while it
loads (ESM-2 3B: the checkpoint and fair-esm's fp32 build), from the GPU run
(``bench/results/2026-12-02-workflow-h200/workflow_gpu_h200.json``). The rules pass these as
``mem_mb``; the run plan lists them (``job_memory_mb``) and what they stand on
(``job_memory_basis``: :func:`basis`).

Long records cost no more than reads: a FASTA record's bases go to disk while it is read
(:mod:`virnuc_core.data.long_records`), so index_fasta and summarize_sample peaked at the same 83
and 138 MB on a 30- and a 300-megabase record (909 and 802 MB before).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from importlib.resources import files

from virnuc_core.util.npyfile import NpyReader

MARGIN = 1.5
# index_fasta's reads, estimated from the input files: decompressed bytes of one read's record
# (a FASTQ record of a 75-base read with a 60-character header is about 216) and the ratio of
# decompressed to compressed reads (gzip of FASTQ or FASTA: about 3 to 4.5).
RECORD_BYTES = 200
COMPRESSION = 4
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")

# rule -> (MB, bytes per kept frame of the sample; per read for index_fasta), before the margin,
# and what they stand on: package data (virnuc_core/measured/memory.json), so that an installed
# copy plans runs too.
_TABLE = json.loads(files("virnuc_core.measured").joinpath("memory.json").read_text())
MEASURED = {rule: (e["mb"], e["bytes_per_frame"]) for rule, e in _TABLE["rules"].items()}
SOURCES = tuple(_TABLE["sources"])
NOTES = {rule: e["note"] for rule, e in _TABLE["rules"].items() if "note" in e}


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
