"""The report's figures: histograms of P(virus) over frames and over reads, drawn without
holding the scores (streamed into fixed bins)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import numpy as np

from virnuc_core.report.summary import NA, PREDICTION_COLUMNS, SUMMARY_COLUMNS, _tsv_rows
from virnuc_core.util.files import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (only figure steps need it)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG, atomically, and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)


def _histogram(values: Iterator[str], bins: int = 50, block: int = 1 << 16) -> np.ndarray:
    """Counts over [0, 1] in ``bins`` bins of the decimal strings ``values``, a block at a time."""
    counts = np.zeros(bins, np.int64)
    while True:
        part = np.fromiter(itertools.islice(values, block), float)
        if part.size == 0:
            return counts
        counts += np.histogram(part, bins=bins, range=(0, 1))[0]


def read_scores(summary_tsv: str | os.PathLike) -> Iterator[str]:
    """The ``max_virus_score`` of each scored read of summary.tsv (``NA`` skipped), streamed."""
    col = SUMMARY_COLUMNS.index("max_virus_score")
    return (row[col] for row in _tsv_rows(summary_tsv, SUMMARY_COLUMNS) if row[col] != NA)


def plot_scores(
    predictions_tsv: str | os.PathLike, summary_tsv: str | os.PathLike, path: str | os.PathLike
) -> None:
    """Histograms of P(virus): per frame (prediction_results) and per read (summary.tsv max),
    counted while the files stream by."""
    frames = _histogram(row[3] for row in _tsv_rows(predictions_tsv, PREDICTION_COLUMNS))
    reads = _histogram(read_scores(summary_tsv))
    edges = np.linspace(0, 1, frames.size + 1)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    panels = ((frames, "frames", "P(virus) of each kept frame"), (reads, "reads", "max P(virus)"))
    for ax, (counts, what, xlabel) in zip(axes, panels, strict=True):
        ax.stairs(counts, edges, fill=True, color="#4C72B0")
        ax.axvline(0.5, color="#C44E52", linestyle="--", linewidth=1)
        ax.set(xlabel=xlabel, ylabel=what, title=f"{int(counts.sum()):,} {what}", xlim=(0, 1))
    save_figure(fig, path)
