"""Embedding throughput per shard, for the report: a table (TSV and HTML) and a bar chart.

One row per embed job (model x shard), put together from three files the job leaves: the shard's
HDF5 (record count and the ``device`` attribute), its log (the last ``progress:`` line's tokens/s
and records/s, and the ``device`` line) and its Snakemake benchmark file (wall time, peak RSS).
A missing log or benchmark file gives NA, not an error: the report still builds.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py

from virnuc_core.files import atomic_writer
from virnuc_core.summary import NA, html_page, html_table, pyplot, save_figure

_PROGRESS = re.compile(
    r"progress: (\d+)/(\d+) records \([\d.]+%\), ([\d,.]+) tokens/s, ([\d,.]+) records/s"
)
_DEVICE = re.compile(r"\bdevice (\S+) \(([^,()]*), GPU index ([^)]*)\)")


@dataclass(frozen=True)
class ShardThroughput:
    """One embed job. Rates come from its log (the embedding loop, model load excluded), wall
    time and peak memory from its benchmark file (whole job); None where a file is missing."""

    model: str
    shard: int
    device: str  # the GPU's name, or cpu (the shard's HDF5 attribute)
    torch_device: str  # e.g. cuda:1, and how it was chosen (log)
    records: int
    tokens_per_s: float | None
    records_per_s: float | None
    wall_s: float | None
    max_rss_mb: float | None

    @property
    def records_per_wall_s(self) -> float | None:
        """Records over the job's whole wall time (load and writing included)."""
        return self.records / self.wall_s if self.wall_s else None


THROUGHPUT_COLUMNS = (*(f.name for f in fields(ShardThroughput)), "records_per_wall_s")


def parse_embed_log(text: str) -> dict[str, object]:
    """tokens/s and records/s of the last ``progress:`` line, and the device line, of a log."""
    out: dict[str, object] = {"tokens_per_s": None, "records_per_s": None, "torch_device": NA}
    progress = _PROGRESS.findall(text)
    if progress:
        out["tokens_per_s"] = float(progress[-1][2].replace(",", ""))
        out["records_per_s"] = float(progress[-1][3].replace(",", ""))
    device = _DEVICE.findall(text)
    if device:
        name, source, index = device[-1]
        out["torch_device"] = name if source == "cpu" else f"{name} ({source}, GPU {index})"
    return out


def read_benchmark(path: str | os.PathLike) -> tuple[float | None, float | None]:
    """(wall seconds, peak RSS in MB) of a Snakemake benchmark file; means over repeats."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except FileNotFoundError:
        return None, None

    def mean(key: str) -> float | None:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "", NA, "-")]
        return statistics.fmean(values) if values else None

    return mean("s"), mean("max_rss")


def embed_jobs(
    sample: str, models: Sequence[str], shards: int, patterns: Mapping[str, str]
) -> list[dict]:
    """Each embed job's model, shard and files: ``patterns`` (h5, log, benchmark, with
    ``{sample}``, ``{model}`` and ``{i}`` as in rule embed_shard) filled in."""
    return [
        {
            "model": m,
            "shard": i,
            **{k: p.format(sample=sample, model=m, i=i) for k, p in patterns.items()},
        }
        for m in models
        for i in range(shards)
    ]


def shard_throughput(
    model: str, shard: int, shard_h5: str | os.PathLike, log: str | os.PathLike, benchmark: str
) -> ShardThroughput:
    """The throughput row of one embed job; a missing log or benchmark gives None values."""
    with h5py.File(shard_h5, "r") as f:
        records = int(f["records"].shape[0])
        device = str(f.attrs.get("device", NA))
    text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
    wall, rss = read_benchmark(benchmark)
    return ShardThroughput(
        model, shard, device, records=records, wall_s=wall, max_rss_mb=rss, **parse_embed_log(text)
    )


def _fmt(value: object) -> object:
    if value is None:
        return NA
    return round(value, 1) if isinstance(value, float) else value


def throughput_rows(rows: Sequence[ShardThroughput]) -> list[list[object]]:
    """Table rows in :data:`THROUGHPUT_COLUMNS` order, numbers rounded, None as NA."""
    return [[_fmt(v) for v in (*asdict(r).values(), r.records_per_wall_s)] for r in rows]


def write_throughput(
    rows: Sequence[ShardThroughput], sample: str, tsv: str | os.PathLike, page: str | os.PathLike
) -> None:
    """throughput.tsv (machine-readable) and throughput.html (for the report)."""
    table = throughput_rows(rows)
    with atomic_writer(tsv) as out:
        out.write("\t".join(THROUGHPUT_COLUMNS) + "\n")
        out.writelines("\t".join(map(str, r)) + "\n" for r in table)
    note = (
        "<p>tokens/s and records/s: the embedding loop, from each job's last progress line. "
        "wall_s and max_rss_mb: the whole job (model loading included), from its benchmark "
        "file. NA: the job's log or benchmark file is missing.</p>"
    )
    with atomic_writer(page) as out:
        out.write(
            html_page(
                f"Embedding throughput: {sample}", note + html_table(THROUGHPUT_COLUMNS, table)
            )
        )


def plot_throughput(rows: Sequence[ShardThroughput], path: str | os.PathLike) -> None:
    """Bar charts of tokens/s and records/s per shard, one colour per model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    labels = [f"{r.model} {r.shard}" for r in rows]
    colours = ["#4C72B0" if r.model == "dnabert" else "#55A868" for r in rows]
    for ax, key in zip(axes, ("tokens_per_s", "records_per_s"), strict=True):
        values = [getattr(r, key) or 0.0 for r in rows]
        ax.bar(range(len(rows)), values, color=colours)
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
        what = "tokens" if key == "tokens_per_s" else "sequences (frames)"
        ax.set(ylabel=f"{what}/s", title=f"{what} per second")
    devices = sorted({r.device for r in rows})
    fig.suptitle(f"Embedding throughput per shard ({', '.join(devices)})", fontsize=10)
    save_figure(fig, path)
