"""The predict step's two tables, written a block of frames at a time (spec §4).

Both reproduce the original ``prediction.py`` of VirNucPro (github.com/Li-Jing-1997/VirNucPro;
the later version with ``determine_virus``, which broadinstitute/virnucpro-broad keeps, adds the
second file):

* ``prediction_results``: header ``Sequence_ID, Prediction, score1, score2`` (tab-separated), one
  row per frame in feature order; each score is ``str()`` of the float32 softmax value as numpy
  prints it (shortest round-trip repr, e.g. ``0.99912345``, ``1e-05``); Prediction comes from
  ``torch.max`` over the two probabilities, which returns the first maximal index, so a tie is
  ``others``.
* ``prediction_results_highestscore``: the original re-reads the first file with pandas, sets
  ``Modified_ID = Sequence_ID.str[:-2]``, ``groupby("Modified_ID")`` (groups in **sorted** string
  order) and ``Is_Virus = max(score2) >= max(score1)`` per group (NaN skipped as pandas' max
  does). Here each block's frames are reduced to per-chunk maxima, which are sorted on disk in
  runs and merged (:class:`ChunkMaxima`), so no step holds a Python object per chunk of the
  sample. Comparing the float32 scores gives the same verdicts as the re-read decimal strings.

Ids are written verbatim (they cannot hold tabs or newlines). The original's pandas step would
mangle an id starting with a double quote (it reads it as a quoted field); that is the one place
where these files depart from the original's bytes.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from virnuc_core.registry import FAMILIES
from virnuc_core.util.files import atomic_writer

PRED_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
HIGHEST_HEADER = "Modified_ID\tIs_Virus\n"
LABELS = ("others", "virus")  # class 0, class 1
RUN_CHUNKS = 200_000  # chunks sorted in memory before a run goes to disk


def check_ids(ids: Sequence[str]) -> None:
    """Ids must not hold tabs or line ends (they would break the tables)."""
    for seq_id in ids:
        if "\t" in seq_id or "\n" in seq_id or "\r" in seq_id:
            raise ValueError(f"sequence id {seq_id!r} holds a tab or a line end")


def chunk_maxima(
    ids: Sequence[str], scores: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Chunk keys (``id[:-2]``) of consecutive frames and each run's max score1 and score2
    (NaN skipped; NaN when all are)."""
    keys = [i[:-2] for i in ids]
    if not keys:
        return [], np.zeros(0, np.float32), np.zeros(0, np.float32)
    starts = [0] + [j for j in range(1, len(keys)) if keys[j] != keys[j - 1]]
    return (
        [keys[j] for j in starts],
        np.fmax.reduceat(scores[:, 0], starts),
        np.fmax.reduceat(scores[:, 1], starts),
    )


def _line(key: str, m1: np.float32, m2: np.float32) -> str:
    return f"{key}\t{m1!s}\t{m2!s}\n"


class ChunkMaxima:
    """Per-chunk maxima, sorted by chunk key on disk (runs, then a k-way merge)."""

    def __init__(self, workdir: str | os.PathLike, run_chunks: int = RUN_CHUNKS) -> None:
        self.workdir, self.run_chunks = Path(workdir), run_chunks
        self.keys: list[str] = []  # held in memory until a run is full
        self.maxima: list[np.ndarray] = []  # (k, 2) float32 blocks, in key order of ``keys``
        self.runs: list[Path] = []

    def add(self, keys: list[str], m1: np.ndarray, m2: np.ndarray) -> None:
        """Add chunk maxima; a key seen again (non-adjacent frames) is combined at the end."""
        self.keys.extend(keys)
        self.maxima.append(np.stack([m1, m2], axis=1).astype(np.float32))
        if len(self.keys) >= self.run_chunks:
            self._spill()

    def _sorted_held(self) -> Iterator[tuple[str, np.float32, np.float32]]:
        maxima = np.concatenate(self.maxima) if self.maxima else np.zeros((0, 2), np.float32)
        for j in sorted(range(len(self.keys)), key=self.keys.__getitem__):
            yield self.keys[j], maxima[j, 0], maxima[j, 1]

    def _spill(self) -> None:
        path = self.workdir / f"run{len(self.runs)}.tsv"
        with open(path, "w") as out:
            out.writelines(_line(*item) for item in self._sorted_held())
        self.runs.append(path)
        self.keys, self.maxima = [], []

    def _merged(self) -> Iterator[tuple[str, np.float32, np.float32]]:
        if not self.runs:
            yield from self._sorted_held()
            return
        if self.keys:
            self._spill()
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(open(path)) for path in self.runs]
            for line in heapq.merge(*handles, key=lambda text: text.split("\t", 1)[0]):
                key, m1, m2 = line.rstrip("\n").split("\t")
                yield key, np.float32(m1), np.float32(m2)

    def verdicts(self) -> Iterator[tuple[str, bool]]:
        """(chunk key, Is_Virus) in sorted key order, equal keys combined."""
        key, m1, m2 = None, np.float32(np.nan), np.float32(np.nan)
        for k, a, b in self._merged():
            if k != key:
                if key is not None:
                    yield key, bool(m2 >= m1)
                key, m1, m2 = k, a, b
            else:
                m1, m2 = np.fmax(m1, a), np.fmax(m2, b)
        if key is not None:
            yield key, bool(m2 >= m1)


def prediction_lines(ids: Sequence[str], scores: np.ndarray) -> tuple[str, int]:
    """The prediction_results rows of ``ids`` (float32 ``scores``, N x 2), and how many say
    virus. The label is the first maximal index, as ``torch.max`` (a tie is others)."""
    labels = scores.argmax(axis=1) if len(ids) else np.zeros(0, np.int64)
    text = "".join(
        [
            f"{i}\t{LABELS[lab]}\t{s1!s}\t{s2!s}\n"
            for i, lab, s1, s2 in zip(ids, labels.tolist(), scores[:, 0], scores[:, 1], strict=True)
        ]
    )
    return text, int(labels.sum())


class PredictionWriter:
    """Writes both tables from blocks of (ids, scores), as a context manager: the files appear
    when the block ends without an error, and not at all otherwise."""

    def __init__(
        self,
        out_tsv: str | os.PathLike,
        out_highest: str | os.PathLike,
        run_chunks: int = RUN_CHUNKS,
    ) -> None:
        self.out_tsv, self.out_highest, self.run_chunks = out_tsv, out_highest, run_chunks
        self.frames = self.virus = 0

    def __enter__(self) -> PredictionWriter:
        with contextlib.ExitStack() as stack:
            tmpdir = stack.enter_context(
                tempfile.TemporaryDirectory(dir=Path(self.out_highest).parent, prefix=".chunks")
            )
            self._pred = stack.enter_context(atomic_writer(self.out_tsv))
            self._pred.write(PRED_HEADER)
            self.chunks = ChunkMaxima(tmpdir, self.run_chunks)
            self._stack = stack.pop_all()
        return self

    def add(self, ids: Sequence[str], scores: np.ndarray) -> None:
        """Add a block of frames, in feature order."""
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != 2:
            raise ValueError(f"scores must be N x 2, got shape {scores.shape}")
        if len(ids) != scores.shape[0]:
            raise ValueError(f"{len(ids)} ids but {scores.shape[0]} score rows")
        check_ids(ids)
        scores = scores.astype(np.float32, copy=False)  # the original's softmax is float32
        text, virus = prediction_lines(ids, scores)
        self._pred.write(text)
        self.chunks.add(*chunk_maxima(ids, scores))
        self.frames += len(ids)
        self.virus += virus

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:  # the chunk table, then both files move into place
            try:
                with atomic_writer(self.out_highest) as high:
                    high.write(HIGHEST_HEADER)
                    for key, verdict in self.chunks.verdicts():
                        high.write(f"{key}\t{verdict}\n")
            except BaseException as err:
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        return bool(self._stack.__exit__(kind, exc, tb))


def write_predictions(
    ids: Sequence[str], scores: np.ndarray, out_tsv: str | os.PathLike,
    out_highest: str | os.PathLike,
) -> None:  # fmt: skip
    """Both tables for frames already in memory (tests, small inputs)."""
    with PredictionWriter(out_tsv, out_highest) as writer:
        writer.add(list(ids), np.asarray(scores))


def predict_sample(
    features_h5: str | os.PathLike, classifier: str, out_tsv: str | os.PathLike,
    out_highest: str | os.PathLike, block_bytes: int = 64 << 20, run_chunks: int = RUN_CHUNKS,
) -> tuple[int, int]:  # fmt: skip
    """The predict step: score every frame of ``features_h5`` with ``classifier`` (a file or
    ``tiny``), a block at a time, into both tables. Returns (frames, frames called virus)."""
    from virnuc_core.engine.models.classify import classifier_for, predict_scores
    from virnuc_core.jobs.merge import feature_blocks, open_features

    with (
        open_features(features_h5) as f,
        PredictionWriter(out_tsv, out_highest, run_chunks) as out,
    ):
        dims = {m: int(f[m].shape[1]) for m in FAMILIES}
        model = classifier_for(classifier, dims)  # a wrong width is told per model
        ids = f["ids"].asstr()
        for lo, hi, x in feature_blocks(f, max(1, block_bytes // (4 * sum(dims.values())))):
            out.add(ids[lo:hi].tolist(), predict_scores(model, x))
    return out.frames, out.virus
