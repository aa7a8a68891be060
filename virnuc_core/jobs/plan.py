"""The shard plan: which records each embed job embeds, balanced by work.

For each model the frames are cut into ``shards`` contiguous ranges of records, each holding about
the same number of tokens of *distinct* sequences (the ones its job embeds). With duplicate
removal, a copy takes the row of its first occurrence, which is never in a later shard (first
occurrences come first), so a shard's file is completed from its own rows and those of earlier
shards (:mod:`virnuc_core.jobs.finalize`). Contiguous ranges make a shard's index rows and sequence
lines one span of each file, and the shard files, in order, are the embeddings in record order:
``features.h5`` maps them as virtual datasets and copies nothing (:mod:`virnuc_core.jobs.merge`).

Outputs: ``plan.json`` (per model: the range bounds, distinct records and tokens per shard) and
one ``{model}.sources.npy`` per model (int64 per record: the record whose embedding it takes,
itself for a distinct sequence).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from virnuc_core.data.dedupe import BLOCK_BYTES, first_occurrences
from virnuc_core.data.index import open_index
from virnuc_core.registry import family
from virnuc_core.util.files import atomic_writer
from virnuc_core.util.npyfile import NpyReader, write_npy

log = logging.getLogger("virnuc.plan")

PLAN_FORMAT = "virnuc-shard-plan/1"


@dataclass(frozen=True)
class ModelPlan:
    """One model's shards: record ranges ``bounds[i] .. bounds[i+1]-1`` and their work."""

    bounds: list[int]
    distinct: list[int]  # distinct sequences per shard (what its job embeds)
    tokens: list[int]  # their tokens (exact for ESM-2; estimated for DNABERT-S: families.py)
    tokens_estimated: bool

    def shard(self, i: int) -> tuple[int, int]:
        """(lo, hi) of shard ``i``."""
        return self.bounds[i], self.bounds[i + 1]


def shard_bounds(weights: np.ndarray, n_shards: int) -> np.ndarray:
    """``n_shards + 1`` record bounds cutting ``weights`` into contiguous runs of about equal
    sums (an empty run where there are fewer records than shards)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    cum = np.cumsum(np.asarray(weights, np.int64))
    total = int(cum[-1]) if cum.size else 0
    targets = total * np.arange(1, n_shards, dtype=np.float64) / n_shards
    cuts = np.searchsorted(cum, targets, side="left") + 1
    cuts = np.minimum(np.maximum.accumulate(cuts), cum.size)
    return np.concatenate([[0], cuts, [cum.size]]).astype(np.int64)


def _range_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over each range ``bounds[i] .. bounds[i+1]-1``."""
    cum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return cum[bounds[1:]] - cum[bounds[:-1]]


def plan_model(
    model: str, sequences: str | os.PathLike, index_path: str | os.PathLike, n_shards: int,
    dedupe: bool, block_bytes: int = BLOCK_BYTES,
) -> tuple[ModelPlan, np.ndarray]:  # fmt: skip
    """One model's plan and sources (see the module docstring)."""
    index = open_index(index_path)
    fam = family(model)
    off, length = fam.columns
    lengths = index.column(length)
    if dedupe:
        sources = first_occurrences(sequences, index.column(off), lengths, block_bytes)
    else:
        sources = np.arange(lengths.size, dtype=np.int64)
    distinct = sources == np.arange(sources.size)
    cost, estimated = fam.token_cost(lengths.astype(np.int64)), fam.tokens_estimated
    weights = np.where(distinct, cost, 0)
    bounds = shard_bounds(weights, n_shards)
    tokens, counts = _range_sums(weights, bounds), _range_sums(distinct, bounds)
    plan = ModelPlan(bounds.tolist(), counts.tolist(), tokens.tolist(), estimated)
    return plan, sources


def plan_shards(
    index_path: str | os.PathLike,
    sequences: Mapping[str, str | os.PathLike],
    n_shards: int,
    dedupe: bool,
    plan_json: str | os.PathLike,
    sources_npy: Mapping[str, str | os.PathLike],
    block_bytes: int = BLOCK_BYTES,
) -> dict[str, ModelPlan]:
    """Plan every model of ``sequences`` (model -> its sequence file): write ``plan_json`` and
    each model's ``sources_npy``. Models are planned one after the other (bounded memory)."""
    plans = {}
    for model, path in sequences.items():
        plan, sources = plan_model(model, path, index_path, n_shards, dedupe, block_bytes)
        with atomic_writer(sources_npy[model], "wb") as out:
            write_npy(out, sources)
        n, d = sources.size, sum(plan.distinct)
        log.info("%s: %d distinct sequences of %d frames; shards %s", model, d, n, plan.bounds)
        plans[model] = plan
        del sources
    doc = {
        "format": PLAN_FORMAT,
        "shards": n_shards,
        "dedupe": dedupe,
        "frames": NpyReader(index_path).rows,
        "models": {m: asdict(p) for m, p in plans.items()},
    }
    with atomic_writer(plan_json) as out:
        json.dump(doc, out, indent=1)
    return plans


def read_plan(path: str | os.PathLike) -> dict:
    """The plan document written by :func:`plan_shards` (format checked)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path}: not a shard plan of this version ({doc.get('format')!r})")
    return doc


def model_plan(doc: Mapping, model: str) -> ModelPlan:
    """One model's :class:`ModelPlan` from a plan document."""
    return ModelPlan(**doc["models"][model])
