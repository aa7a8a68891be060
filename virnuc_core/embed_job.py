"""One embed job: one model over one shard, on one device, resumable, stoppable.

The job claims a device, loads the encoder, resumes its checkpoint (kept outside the rule's
declared outputs), embeds the records not yet committed, commits at a steady cadence, and writes
the declared output only when the shard is complete. SIGTERM/SIGINT commit what is done and exit
non-zero; a CUDA out-of-memory error fails the job cleanly so Snakemake's retry (with half the
token budget) can succeed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable

import numpy as np
import torch

from virnuc_core import settings as knobs
from virnuc_core.fasta import FrameIndex, read_index
from virnuc_core.gpu import claim_device
from virnuc_core.models import load_encoder
from virnuc_core.packing import PackedBatch
from virnuc_core.progress import Progress
from virnuc_core.runner import RecordReader, embed_batches, packed_batches, read_tokens
from virnuc_core.settings import EmbedSettings
from virnuc_core.shards import read_shard
from virnuc_core.store import ShardCheckpoint

log = logging.getLogger("virnuc.embed")

EXIT_INTERRUPTED = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Interrupted(Exception):
    """A stop signal arrived; progress has been committed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StopFlag:
    """Records SIGTERM/SIGINT so the loop stops at the next batch boundary, after a commit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for sig in EXIT_INTERRUPTED:
            signal.signal(sig, self._set)

    def _set(self, signum, frame) -> None:
        self.signum = signum

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal came."""
        if self.signum is not None:
            raise Interrupted(self.signum)


def input_fingerprint(*paths: str | os.PathLike) -> str:
    """Content hash of the job's inputs (index and shard list): a resume needs the same ones."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def sequence_columns(table: FrameIndex, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Byte offsets and lengths of the sequences a model reads: proteins (esm) or frames."""
    if model == "esm":
        return table.aa_offset, table.aa_length
    return table.nt_offset, table.nt_length


def run_embed_job(
    settings: EmbedSettings,
    sequences: str,
    index: str,
    shard: str,
    work: str,
    output: str,
    workers: int = 2,
) -> None:
    """Embed the shard's records into ``output``; raises :class:`Interrupted` on a stop signal."""
    stop = StopFlag()
    table = read_index(index)
    records, sources = read_shard(shard, settings.model)
    distinct = records[sources == records]  # the others copy their source's row at the end
    with claim_device(knobs.lock_dir()) as claim:
        device = torch.device(claim.device)
        log.info("device %s (%s, GPU index %s)", device, claim.source, claim.index)
        encoder = load_encoder(settings, device)
        # Shards merge only if they share settings and index; a resume also needs the same shard.
        made_with = f"{settings.fingerprint()}|index={input_fingerprint(index)}"
        ckpt = ShardCheckpoint.open(
            work,
            f"{made_with}|shard={input_fingerprint(shard)}",
            encoder.dim,
            settings.checkpoint_every,
            settings.checkpoint_seconds,
        )
        todo = np.setdiff1d(distinct, ckpt.committed_records(), assume_unique=True)
        log.info("%d records, %d distinct sequences", len(records), len(distinct))
        log.info("resuming: %d records committed, %d to embed", ckpt.n_committed, len(todo))
        offsets, lengths = sequence_columns(table, settings.model)
        reader = RecordReader(sequences, todo, offsets[todo], lengths[todo], encoder.tokenize)
        batches = packed_batches(
            read_tokens(reader, workers), settings.token_budget, pin=device.type == "cuda"
        )
        progress = Progress(len(distinct), settings.progress_seconds, log, done=ckpt.n_committed)
        try:
            for recs, emb, tokens in embed_batches(_embed_fn(encoder, settings), batches, device):
                ckpt.append(recs, emb)
                progress.update(len(recs), tokens)
                if ckpt.should_commit():
                    ckpt.commit()
                stop.check()
        finally:
            ckpt.commit()  # whatever ended the loop, keep what is done
            log.info(progress.line())
        attrs = {**output_attrs(settings, encoder.describe(), device), "fingerprint": made_with}
        attrs["distinct_sequences"] = len(distinct)
        copies = (records[sources != records], sources[sources != records])
        ckpt.finalize(output, attrs, ids=table.ids[np.sort(records)].tolist(), copies=copies)
    log.info("wrote %s", output)


def _embed_fn(encoder, settings: EmbedSettings) -> Callable[[PackedBatch], torch.Tensor]:
    """The encoder's packed forward, with the test hooks (delay, simulated OOM) when set."""
    hooks = knobs.FaultHooks.from_env()
    delay, oom_above = hooks.batch_delay, hooks.oom_above
    if not delay and not oom_above:
        return encoder.embed_packed

    def hooked(batch: PackedBatch) -> torch.Tensor:
        if oom_above and settings.token_budget > oom_above:
            raise torch.OutOfMemoryError(
                f"test hook {knobs.ENV_OOM_ABOVE}={oom_above}: simulated CUDA out of memory "
                f"at token budget {settings.token_budget}"
            )
        time.sleep(delay)
        return encoder.embed_packed(batch)

    return hooked


def output_attrs(settings: EmbedSettings, description: dict, device: torch.device) -> dict:
    """HDF5 attributes of an output: the settings, the encoder's description (``encoder.*``)
    and the device; str subclasses (torch's version string) become plain str for h5py."""
    attrs = {f"encoder.{k}": v for k, v in description.items()}
    attrs.update(settings.attrs())
    attrs["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {k: str(v) if isinstance(v, str) else v for k, v in attrs.items()}
