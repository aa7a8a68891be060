"""Validation references made where the weights already are: in the embed jobs.

The validation sample is drawn once per sample from the index (:func:`write_sample`). Each embed
job computes the fp32 reference embeddings (the encoder's plain v1 path) of the sampled records
in its own shard, from the checkpoint it has loaded anyway and before it packs the fast model
(:func:`shard_reference`). The validation job then reads them (:func:`gather`) instead of
reading and building the model again (ESM-2 3B: about 50 s of a 282 s run on an H200), and
computes only what is missing: rows of a sample drawn since the embeddings were made (other
``validate`` settings), or of a shard whose reference file does not belong to its embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

import h5py
import numpy as np

from virnuc_core.data.index import open_index
from virnuc_core.jobs.validate import stratified_sample
from virnuc_core.registry import family
from virnuc_core.util.fasta import read_sequences
from virnuc_core.util.files import atomic_path
from virnuc_core.util.npyfile import NpyReader

log = logging.getLogger("virnuc.references")

FORMAT = "virnuc-shard-reference/1"


def write_sample(index: str, n: int, seed: int, out: str) -> np.ndarray:
    """Draw the validation sample (record numbers, ascending) and write it as ``.npy``."""
    records = stratified_sample(open_index(index).column("aa_length"), n, seed)
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, records.astype(np.int64))
    return records


def read_sample(path: str) -> np.ndarray:
    """The sample :func:`write_sample` wrote (int64, ascending)."""
    records = np.load(path, allow_pickle=False)
    if records.dtype.kind != "i" or records.ndim != 1 or np.any(np.diff(records) <= 0):
        raise ValueError(f"{path}: not a validation sample (ascending record numbers)")
    return records.astype(np.int64)


def sample_sequences(
    index: str, sequences: str, model: str, records: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """The sequences ``model`` reads for ``records``, and their lengths (one small read of the
    index each)."""
    rows_file: NpyReader = open_index(index)
    rows = np.empty(records.size, rows_file.dtype)
    for j, r in enumerate(records.tolist()):
        rows[j] = rows_file.read(r, r + 1)[0]
    offsets, lengths = family(model).spans(rows)
    return read_sequences(sequences, offsets, lengths), lengths


def shard_reference(encoder, shard, sample: np.ndarray, made_with: str, path: str, attrs: dict):
    """Write (or keep, if it is this shard's already) the reference rows of the sampled
    records in ``shard`` (:class:`~virnuc_core.jobs.embed_job.ShardInput`) to ``path``.

    ``made_with``: the embeddings' settings fingerprint, which the validation job matches
    against the shard's; ``attrs``: the outputs' attributes, recorded with the rows.
    """
    records, made_from = _shard_records(shard, sample), f"{made_with}|{shard.digest}"
    if _holds(path, records, made_from):
        log.info("%s: reference rows of %d sampled records kept", path, records.size)
        return
    seqs, _ = sample_sequences(shard.index, shard.sequences, shard.model, records)
    ref = encoder.reference_embed(seqs) if seqs else np.zeros((0, encoder.dim), np.float32)
    ref = np.ascontiguousarray(ref, np.float32)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["records"], f["embeddings"] = records, ref
        f.attrs.update(attrs)
        f.attrs.update(format=FORMAT, made_from=made_from, settings_fingerprint=made_with,
                       rows_sha256=_rows_sha256(ref))  # fmt: skip
    log.info("%s: reference rows of %d sampled records", path, records.size)


def kept(shard, sample: np.ndarray, made_with: str, path: str) -> bool:
    """Whether ``path`` holds the shard's reference rows already (a resumed job): what
    :func:`shard_reference` would keep."""
    return _holds(path, _shard_records(shard, sample), f"{made_with}|{shard.digest}")


def _shard_records(shard, sample: np.ndarray) -> np.ndarray:
    return sample[(sample >= shard.lo) & (sample < shard.hi)]


def _rows_sha256(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, np.float32).tobytes()).hexdigest()


def _read(path: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(records, rows, attrs) of a reference file that passes its checksum, else None (with
    a warning if the file exists)."""
    if not os.path.exists(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            records, rows, attrs = f["records"][()], f["embeddings"][()], dict(f.attrs)
    except (OSError, KeyError) as exc:
        log.warning("%s: unreadable (%s); not used", path, exc)
        return None
    if attrs.get("format") != FORMAT or attrs.get("rows_sha256") != _rows_sha256(rows):
        log.warning("%s: fails its checksum (or is not a shard reference file); not used", path)
        return None
    return records, rows, attrs


def _holds(path: str, records: np.ndarray, made_from: str) -> bool:
    got = _read(path)
    return (
        got is not None and got[2].get("made_from") == made_from and np.array_equal(got[0], records)
    )


def gather(
    references: Sequence[str], fingerprints: Sequence[str], records: np.ndarray, dim: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(found mask, rows, attributes of the first file) for ``records`` from the shards'
    reference files; a file is used only if its fingerprint is its shard's (``fingerprints``,
    in the same order). Rows not found are zero; say so and compute them."""
    found = np.zeros(records.size, bool)
    rows = np.zeros((records.size, dim), np.float32)
    attrs: dict = {}
    for path, want in zip(references, fingerprints, strict=True):
        got = _read(path)
        if got is None:
            continue
        have, emb, file_attrs = got
        if file_attrs.get("settings_fingerprint") != want:
            log.warning("%s: made with other settings or weights than its shard; not used", path)
            continue
        pos = np.minimum(np.searchsorted(records, have), max(records.size - 1, 0))
        hit = records[pos] == have if records.size else np.zeros(have.size, bool)
        rows[pos[hit]], found[pos[hit]] = emb[hit], True
        attrs = attrs or {
            k: v for k, v in file_attrs.items() if k.startswith("encoder.") or k == "device"
        }
    return found, rows, attrs
