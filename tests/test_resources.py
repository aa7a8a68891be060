"""Each rule's memory reservation (SLURM kills a job over its mem_mb): the frame count it is
computed from, the exact figure every rule asks Snakemake for on a known index, and that the
figures cover what bench/scale.py measured.

The expected figures are written out from the measured constants (MB, bytes per kept frame,
margin 1.5) as plain numbers: a changed constant or formula must change this file too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from tests.workflow_helpers import REPO, run_snakemake, write_config
from virnuc_core.data.index import INDEX_DTYPE
from virnuc_core.jobs import resources
from virnuc_core.util.npyfile import write_npy

FRAMES = 2_345_678
# rule -> (MB, bytes per kept frame) as measured (see virnuc_core/jobs/resources.py), margin 1.5
MEASURED = {
    "index_fasta": (100, 32),
    "plan_shards": (180, 56),
    "embed_shard": (20000, 17),
    "finalize_shard": (300, 5),
    "merge_shards": (200, 1),
    "validation_sample": (120, 32),
    "validate_embeddings": (20000, 0),
    "validation_summary": (320, 0),
    "predict": (710, 0),
    "summarize_sample": (140, 0),
    "report_figures": (150, 0),
    "verify_models": (200, 0),
}
# at FRAMES kept frames: ceil(1.5 * (MB + bytes * 2.345678)), worked out by hand
AT_FRAMES = {
    "index_fasta": 263,  # 1.5 * (100 + 75.06) = 262.59
    "plan_shards": 468,  # 1.5 * (180 + 131.36) = 467.04
    "embed_shard": 30060,  # 1.5 * (20000 + 39.88) = 30059.82
    "finalize_shard": 468,  # 1.5 * (300 + 11.73) = 467.59
    "merge_shards": 304,  # 1.5 * (200 + 2.35) = 303.52
    "validation_sample": 293,  # 1.5 * (120 + 75.06) = 292.59
    "validate_embeddings": 30000,
    "validation_summary": 480,
    "predict": 1065,
    "summarize_sample": 210,
    "report_figures": 225,
    "verify_models": 300,
}
SCALE_RESULTS = REPO / "bench" / "results" / "2026-12-06-scale-cpu"


def test_expected_figures_follow_the_measured_constants():
    # the hand-worked table above agrees with the formula on the constants above
    for rule, (mb, per_frame) in MEASURED.items():
        assert AT_FRAMES[rule] == math.ceil(1.5 * (mb + per_frame * FRAMES / 1e6)), rule


def _index(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        write_npy(handle, np.zeros(rows, INDEX_DTYPE))
    return path


def test_frames_of_a_known_index_and_each_rule_s_reservation(tmp_path):
    index = _index(tmp_path / "results/s/frames.index.npy", FRAMES)
    inputs = [str(tmp_path / "results/s/frames.fa"), str(index)]
    assert resources.frames_of(inputs) == FRAMES
    assert resources.frames_of([str(tmp_path / "missing/frames.index.npy")]) == 0
    sources = _index(tmp_path / "results/s/shards/esm.sources.npy", 1234)  # one row a frame too
    assert resources.frames_of([str(tmp_path / "results/s/x.h5"), str(sources)]) == 1234
    assert {r: resources.mem_mb(r, resources.frames_of(inputs)) for r in MEASURED} == AT_FRAMES
    assert resources.plan_table(FRAMES) == AT_FRAMES


def test_index_fasta_asks_by_the_reads_estimated_from_the_input_files(tmp_path):
    # 200 bytes a read, compressed files (told by their magic bytes) counted 4x: 2,000,000 plain
    # bytes are 10,000 reads; the same bytes gzip-compressed 40,000.
    plain = tmp_path / "a.fq"
    plain.write_bytes(b"@" + b"x" * 1_999_999)
    packed = tmp_path / "b.fq"  # named as plain: the content tells
    packed.write_bytes(b"\x1f\x8b" + b"x" * 1_999_998)
    assert resources.reads_of([str(plain)]) == 10_000
    assert resources.reads_of([str(plain), str(packed), str(tmp_path / "gone.fq")]) == 50_000
    assert resources.grows_with("index_fasta", [str(plain)]) == 10_000
    assert resources.mem_mb("index_fasta", 10_000) == 151  # 1.5 * (100 + 0.32) = 150.48
    # 10 M reads of 150 bases in a 1.2 GB gzip: 24 M reads by the estimate
    assert resources.mem_mb("index_fasta", 24_000_000) == 1302  # 1.5 * (100 + 768)


def _dry_run_resources(workdir: Path) -> dict[str, dict[str, str]]:
    """rule -> the resources of its (first) job, from a dry run's job listing."""
    out = run_snakemake(workdir, "-n").stdout
    jobs: dict[str, dict[str, str]] = {}
    for rule, block in re.findall(r"(?m)^(?:local)?rule (\w+):\n((?:    .*\n)+)", out):
        found = re.search(r"resources: (.*)", block)
        if found and rule not in jobs:
            jobs[rule] = dict(kv.split("=", 1) for kv in found.group(1).split(", "))
    return jobs


def test_every_rule_asks_snakemake_for_its_reservation(tmp_path):
    # The demo with an index (and duplicate sources) of FRAMES rows: every rule that reads one
    # of them asks for the figure at FRAMES frames; index_fasta by the reads' file size.
    write_config(tmp_path)
    _index(tmp_path / "results/demo/frames.index.npy", FRAMES)
    for model in ("dnabert", "esm"):  # what finalize_shard counts the frames from
        _index(tmp_path / f"results/demo/shards/{model}.sources.npy", FRAMES)
    jobs = _dry_run_resources(tmp_path)
    asked = {rule: int(res["mem_mb"]) for rule, res in jobs.items() if "mem_mb" in res}
    # the demo's reads: 34,343 bytes, 171 reads by the estimate: 1.5 * (100 + 0.0055) = 150.008
    assert asked.pop("index_fasta") == 151
    assert asked == {rule: AT_FRAMES[rule] for rule in asked}
    assert len(asked) == 10  # every other rule of the demo (it has no models folder to verify)


def test_reservations_cover_what_bench_scale_measured():
    # Each rule's reservation at the measured frame count is at least 1.25x the peak RSS the
    # bench measured (long records included), so a job is not killed for memory it needs.
    docs = [json.loads(p.read_text()) for p in sorted(SCALE_RESULTS.glob("*.json"))]
    rows = [row for doc in docs for row in doc.get("memory", [])]
    rows += [
        {"rule": "plan_shards", "frames": p["frames"], "peak_rss_mb": p["max_rss_mb"]}
        for doc in docs
        for p in doc.get("plan_alone", [])
    ]
    assert {row["rule"] for row in rows} == {"index_fasta", "plan_shards", "summarize_sample"}
    for row in rows:
        frames = 0 if row["rule"] == "index_fasta" else row["frames"]  # the least it asks
        reserved = resources.mem_mb(row["rule"], frames)
        assert reserved >= 1.25 * row["peak_rss_mb"], row
