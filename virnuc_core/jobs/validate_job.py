"""The validation steps: recompute a sample with the reference path; agreement of verdicts."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from virnuc_core import settings as knobs
from virnuc_core.data.index import open_index, read_ids
from virnuc_core.jobs.embed_job import output_attrs
from virnuc_core.jobs.gpu import claim_device
from virnuc_core.jobs.merge import checked_rows, open_features, shard_rows
from virnuc_core.jobs.references import gather, read_sample, sample_sequences
from virnuc_core.jobs.validate import (
    Comparison,
    ValidationFailed,
    cosine_rows,
    plot_histogram,
    verdict_agreement,
    write_comparison,
)
from virnuc_core.registry import FAMILIES, load_encoder
from virnuc_core.settings import EmbedSettings, ValidateSettings
from virnuc_core.util.files import atomic_path, atomic_writer

log = logging.getLogger("virnuc.validate")


def validate_model(
    settings: EmbedSettings,
    checks: ValidateSettings,
    shards: Sequence[str],
    sequences: str,
    index: str,
    frames_fa: str,
    outputs: dict[str, str],
    sample: str,
    references: Sequence[str],
) -> Comparison:
    """Compare the fast embeddings (the model's ``shards``, in order) of the validation sample
    with the reference path.

    ``sample``: the sample's file (:func:`~virnuc_core.jobs.references.write_sample`);
    ``references``: the shards' reference files, in shard order: their rows are used when they
    belong to the shard's embeddings, and only the others are computed here (on a claimed GPU).
    Writes ``outputs['table' | 'summary' | 'histogram' | 'reference']``; raises
    :class:`ValidationFailed` (after writing nothing) when the thresholds are not met.
    """
    frames = open_index(index)
    records = read_sample(sample)
    seqs, lengths = sample_sequences(index, sequences, settings.model, records)
    ids = [read_ids(frames_fa, frames, int(r), int(r) + 1)[0] for r in records.tolist()]
    fast = shard_rows(shards, records)
    fingerprints = [_fingerprint(path) for path in shards]
    found, ref, attrs = gather(references, fingerprints, records, fast.shape[1])
    if not found.all():
        attrs = _compute_missing(settings, seqs, found, ref)
    cmp = Comparison(
        settings.model,
        records,
        ids,
        lengths,
        cosine_rows(fast, ref),
        checks.mean_cosine,
        checks.min_cosine,
    )
    log.info("%s: %s", settings.model, json.dumps(cmp.summary()))
    if not cmp.passed:
        raise ValidationFailed(cmp.failure_message())
    write_comparison(cmp, outputs["table"], outputs["summary"])
    plot_histogram(cmp, outputs["histogram"])
    with atomic_path(outputs["reference"]) as tmp, h5py.File(tmp, "w") as f:
        f["records"] = records
        f["embeddings"] = ref.astype(np.float32)
        f.attrs.update(attrs)
        f.attrs.update(settings.attrs())
        f.attrs["reference_rows_from_embed_jobs"] = int(found.sum())
    return cmp


def _compute_missing(settings: EmbedSettings, seqs: list[str], found, ref) -> dict:
    """Fill the rows of ``ref`` the embed jobs did not make (``~found``) by the reference path,
    on a claimed GPU (or the CPU); the outputs' attributes of the encoder that made them."""
    log.warning("%s: %d of %d sampled rows have no reference from the embed jobs (validate "
                "settings changed since?); computing them here",
                settings.model, int((~found).sum()), found.size)  # fmt: skip
    with claim_device(knobs.lock_dir()) as claim:
        encoder = load_encoder(settings, claim.device, reference=True)
        with torch.inference_mode():
            ref[~found] = encoder.reference_embed([seqs[i] for i in np.flatnonzero(~found)])
        return output_attrs(settings, encoder.describe(), torch.device(claim.device))


def _fingerprint(shard: str) -> str:
    with h5py.File(shard, "r") as f:
        return str(f.attrs.get("settings_fingerprint", ""))


def summarize(
    features: str,
    references: Sequence[str],
    summaries: Sequence[str],
    output: str,
    classifier: str | None,
    classifier_sha256: str = "",
) -> dict:
    """Combine the per-model summaries; with a classifier, the verdict agreement v1 vs v2
    (and the classifier file's sha256)."""
    result = {"models": [json.loads(Path(p).read_text()) for p in summaries]}
    if classifier_sha256:
        result["classifier_sha256"] = classifier_sha256
    if classifier:
        result["classifier_agreement"] = _agreement(features, references, classifier)
    with atomic_writer(output) as out:
        json.dump(result, out, indent=2)
    return result


def _agreement(features: str, references: Sequence[str], classifier: str) -> dict:
    from virnuc_core.engine.models.classify import classifier_for, predict_scores

    refs = {}
    for path in references:
        with h5py.File(path, "r") as f:
            refs[f.attrs["model"]] = (f["records"][()], f["embeddings"][()])
    order = list(FAMILIES)  # the classifier's input: the models' columns in this order
    records = refs[order[0]][0]
    if not all(np.array_equal(records, refs[m][0]) for m in order[1:]):
        raise ValueError("the two models' validation samples differ; rerun validate_embeddings")
    with open_features(features) as f:
        fast = np.concatenate([checked_rows(f[m], records) for m in order], axis=1)
        dims = {m: int(f[m].shape[1]) for m in FAMILIES}  # a wrong width is told per model
    model = classifier_for(classifier, dims)
    v2 = predict_scores(model, fast)
    v1 = predict_scores(model, np.concatenate([refs[m][1] for m in order], axis=1))
    return {"n": int(len(records)), "agreement": verdict_agreement(v2, v1)}
