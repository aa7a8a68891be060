"""Embedding throughput per shard, for the report: a table (TSV and HTML) and a bar chart.

One row per embed job (model x shard), read from the shard's HDF5 file alone: its record count,
its ``device`` attribute and the metrics its embed job recorded as data (``metrics.*``: tokens/s
and records/s of the embedding loop, the job's wall time and peak memory, the device it claimed).
Metrics a file lacks (made by an older version) are NA: the report still builds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import h5py

from virnuc_core.jobs.merge import plain_attr
from virnuc_core.registry import FAMILIES
from virnuc_core.report.figures import pyplot, save_figure
from virnuc_core.report.run_summary import html_page, html_table
from virnuc_core.report.summary import NA
from virnuc_core.util.files import atomic_writer


@dataclass(frozen=True)
class ShardThroughput:
    """One embed job. Rates are the embedding loop's (model load excluded); wall time and peak
    memory the whole job's (load included); None where the file does not say."""

    model: str
    shard: int
    device: str  # the GPU's name, or cpu
    torch_device: str  # e.g. cuda:1 (lock, GPU 1)
    records: int
    tokens_per_s: float | None
    records_per_s: float | None
    loop_s: float | None
    wall_s: float | None
    max_rss_mb: float | None

    @property
    def records_per_wall_s(self) -> float | None:
        """Records over the job's whole wall time (load and writing included)."""
        return self.records / self.wall_s if self.wall_s else None


THROUGHPUT_COLUMNS = (*(f.name for f in fields(ShardThroughput)), "records_per_wall_s")


def _torch_device(metrics: dict) -> str:
    device = metrics.get("torch_device")
    if device is None:
        return NA
    source = metrics.get("device_source", "")
    return device if source == "cpu" else f"{device} ({source}, GPU {metrics.get('gpu_index')})"


def shard_throughput(shard_h5: str | os.PathLike) -> ShardThroughput:
    """The throughput row of one embed job, from its shard file."""
    with h5py.File(shard_h5, "r") as f:
        records = int(f["embeddings"].shape[0])
        attrs = {k: plain_attr(v) for k, v in f.attrs.items()}
    metrics = {k.removeprefix("metrics."): v for k, v in attrs.items() if k.startswith("metrics.")}
    found = re.search(r"shard_(\d+)\.h5$", str(shard_h5))
    return ShardThroughput(
        model=str(attrs.get("model", NA)),
        shard=int(found.group(1)) if found else -1,
        device=str(attrs.get("device", NA)),
        torch_device=_torch_device(metrics),
        records=records,
        tokens_per_s=metrics.get("tokens_per_s"),
        records_per_s=metrics.get("records_per_s"),
        loop_s=metrics.get("loop_s"),
        wall_s=metrics.get("wall_s"),
        max_rss_mb=metrics.get("max_rss_mb"),
    )


def _fmt(value: object) -> object:
    if value is None:
        return NA
    return round(value, 1) if isinstance(value, float) else value


def throughput_rows(rows: Sequence[ShardThroughput]) -> list[list[object]]:
    """Table rows in :data:`THROUGHPUT_COLUMNS` order, numbers rounded, None as NA."""
    return [[_fmt(v) for v in (*asdict(r).values(), r.records_per_wall_s)] for r in rows]


OTHER = "#8C8C8C"  # a shard of a model the registry does not know (an older run's)
PLAN_COLUMNS = ("model", "device", "expected_gpu_s", "source", "loop_s", "wall_s")


def plan_vs_run(plan: dict, rows: Sequence[ShardThroughput]) -> list[list[object]]:
    """Per model: the plan's expected GPU seconds on the GPU the jobs ran on (NA when the plan
    has no measured figure for it), beside the jobs' embedding-loop and wall seconds."""
    out = []
    for model, p in plan.get("models", {}).items():
        mine = [r for r in rows if r.model == model]
        device = mine[0].device if mine else NA
        expected = next((t for t in p.get("expected_gpu_seconds", []) if t["gpu"] == device), None)
        loop = sum(r.loop_s or 0.0 for r in mine) if mine else None
        wall = sum(r.wall_s or 0.0 for r in mine) if mine else None
        out.append([model, device, _fmt(expected["seconds"]) if expected else NA,
                    expected["source"] if expected else NA, _fmt(loop), _fmt(wall)])  # fmt: skip
    return out


def write_throughput(
    rows: Sequence[ShardThroughput], sample: str, tsv: str | os.PathLike, page: str | os.PathLike,
    plan: dict | None = None,
) -> None:  # fmt: skip
    """throughput.tsv (machine-readable) and throughput.html (for the report), with the run
    plan's expected GPU time beside what the jobs took."""
    table = throughput_rows(rows)
    with atomic_writer(tsv) as out:
        out.write("\t".join(THROUGHPUT_COLUMNS) + "\n")
        out.writelines("\t".join(map(str, r)) + "\n" for r in table)
    note = (
        "<p>tokens/s and records/s: the embedding loop; wall_s and max_rss_mb: the whole job "
        "(model loading included); all recorded by each job in its shard file. NA: the file "
        "does not say.</p>"
    )
    body = note + html_table(THROUGHPUT_COLUMNS, table)
    if plan is not None:
        body += (
            "<h2>Plan and run</h2><p>The GPU time the run plan expected before the jobs started "
            "(compute only, from the throughput measured on that GPU) beside the jobs' "
            "embedding loops and whole wall time (model loading included), summed over "
            "shards.</p>" + html_table(PLAN_COLUMNS, plan_vs_run(plan, rows))
        )
    with atomic_writer(page) as out:
        out.write(html_page(f"Embedding throughput: {sample}", body))


def plot_throughput(rows: Sequence[ShardThroughput], path: str | os.PathLike) -> None:
    """Bar charts of tokens/s and records/s per shard, one colour per model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    labels = [f"{r.model} {r.shard}" for r in rows]
    colours = [FAMILIES[r.model].colour if r.model in FAMILIES else OTHER for r in rows]
    for ax, key in zip(axes, ("tokens_per_s", "records_per_s"), strict=True):
        values = [getattr(r, key) or 0.0 for r in rows]
        ax.bar(range(len(rows)), values, color=colours)
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
        what = "tokens" if key == "tokens_per_s" else "sequences (frames)"
        ax.set(ylabel=f"{what}/s", title=f"{what} per second")
    devices = sorted({r.device for r in rows})
    fig.suptitle(f"Embedding throughput per shard ({', '.join(devices)})", fontsize=10)
    save_figure(fig, path)
