"""Validation of the fast embeddings: recompute a stratified sample with the reference path.

The sample is stratified by length (sorted lengths cut into ``n`` equal strata, one frame drawn
from each, seeded), so short and long frames are both checked; the same frames are drawn for both
models because the draw uses the protein lengths of the shared index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virnuc_core.util.files import atomic_path, atomic_writer


class ValidationFailed(RuntimeError):
    """Fast and reference embeddings disagree beyond the configured thresholds."""


def stratified_sample(lengths: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Record numbers of ``min(n, len)`` frames, one per length stratum, ascending."""
    total = len(lengths)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = np.argsort(lengths, kind="stable")
    edges = np.linspace(0, total, n + 1).astype(np.int64)
    picks = edges[:-1] + (rng.random(n) * (edges[1:] - edges[:-1])).astype(np.int64)
    return np.sort(order[picks])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows, computed in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-300)


@dataclass(frozen=True)
class Comparison:
    """Per-frame cosines of one model's sample and the verdict against the thresholds."""

    model: str
    records: np.ndarray
    ids: Sequence[str]
    lengths: np.ndarray
    cosine: np.ndarray
    mean_threshold: float
    min_threshold: float

    @property
    def passed(self) -> bool:
        """Both thresholds met (trivially so for a sample without frames)."""
        if len(self.cosine) == 0:
            return True
        return bool(
            self.cosine.mean() >= self.mean_threshold and self.cosine.min() >= self.min_threshold
        )

    def worst(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` frames with the lowest cosine."""
        order = np.argsort(self.cosine, kind="stable")[:k]
        return [(self.ids[i], float(self.cosine[i])) for i in order]

    def summary(self) -> dict:
        """Numbers for the summary JSON."""
        return {
            "model": self.model,
            "n": int(len(self.cosine)),
            "mean_cosine": float(self.cosine.mean()) if len(self.cosine) else None,
            "min_cosine": float(self.cosine.min()) if len(self.cosine) else None,
            "thresholds": {"mean_cosine": self.mean_threshold, "min_cosine": self.min_threshold},
            "passed": self.passed,
            "worst": [{"id": i, "cosine": c} for i, c in self.worst()],
        }

    def failure_message(self) -> str:
        """What failed and where to look."""
        worst = ", ".join(f"{i} ({c:.6f})" for i, c in self.worst())
        return (
            f"{self.model} embeddings failed validation: mean cosine {self.cosine.mean():.6f} "
            f"(needs >= {self.mean_threshold}), min {self.cosine.min():.6f} (needs >= "
            f"{self.min_threshold}) over {len(self.cosine)} frames. Worst frames: {worst}. "
            "Try precision: fp32 or another attention_backend, and report it if it persists."
        )


def write_comparison(cmp: Comparison, table: str | Path, summary: str | Path) -> None:
    """The per-frame TSV (record, id, length, cosine) and the summary JSON, atomically."""
    with atomic_writer(table) as out:
        out.write("record\tid\tlength\tcosine\n")
        for r, i, n, c in zip(cmp.records, cmp.ids, cmp.lengths, cmp.cosine, strict=True):
            out.write(f"{r}\t{i}\t{n}\t{c:.8f}\n")
    with atomic_writer(summary) as out:
        json.dump(cmp.summary(), out, indent=2)


def plot_histogram(cmp: Comparison, path: str | Path) -> None:
    """Histogram of the per-frame cosines, thresholds marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(1.0 - cmp.cosine, bins=40, color="#4477aa")
    ax.axvline(1.0 - cmp.min_threshold, color="#cc3311", linestyle="--", label="min threshold")
    ax.set_xlabel("1 - cosine(fast, reference)")
    ax.set_ylabel("frames")
    mean = f"mean cosine {cmp.cosine.mean():.6f}" if len(cmp.cosine) else "no frames kept"
    ax.set_title(f"{cmp.model}: {len(cmp.cosine)} frames, {mean}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def verdict_agreement(fast_scores: np.ndarray, ref_scores: np.ndarray) -> float:
    """Share of frames whose verdict (argmax of the two class scores) is the same."""
    return float(np.mean(fast_scores.argmax(1) == ref_scores.argmax(1)))
