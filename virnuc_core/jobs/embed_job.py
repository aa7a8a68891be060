"""One embed job: one model over one shard, on one device, resumable, stoppable.

The job reads only its shard: the plan's record range, those rows of the binary index and of the
sources, and their span of the sequence file. It claims a device, loads the encoder, resumes its
checkpoint (kept outside the rule's declared outputs) if that was made from the same inputs,
embeds the distinct records not yet committed, commits at a steady cadence, and moves the
checkpoint to its declared output when the shard is done, with its attributes and metrics
(``meta.json``). SIGTERM/SIGINT commit what is done and exit non-zero; a CUDA out-of-memory
error fails the job cleanly so Snakemake's retry (with half the token budget) can succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from virnuc_core import settings as knobs
from virnuc_core.data.index import open_index
from virnuc_core.engine.packing import PackedBatch
from virnuc_core.engine.runner import RecordReader, embed_batches, packed_batches, read_tokens
from virnuc_core.jobs.gpu import claim_device
from virnuc_core.jobs.plan import model_plan, read_plan
from virnuc_core.jobs.reference_task import ReferenceTask
from virnuc_core.jobs.store import ShardCheckpoint
from virnuc_core.registry import family, load_encoder
from virnuc_core.settings import EmbedSettings
from virnuc_core.util.npyfile import NpyReader
from virnuc_core.util.progress import Progress

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


SPAN_BLOCK = 1 << 16  # index rows read at a time (41 bytes each)


@dataclass(frozen=True)
class ShardInput:
    """What one job reads, kept small (about 8 bytes per record it embeds): its record range,
    its distinct records (the others copy an earlier record's row) and the content digest of
    its inputs. The byte spans of the sequences are read back from the index only for the
    records still to embed (:meth:`spans`)."""

    model: str
    sequences: str
    index: str
    lo: int
    hi: int
    distinct: np.ndarray
    digest: str

    @classmethod
    def read(
        cls, model: str, sequences: str, index: str, sources: str, plan: str, shard: int,
        block: int = SPAN_BLOCK,
    ) -> ShardInput:  # fmt: skip
        """The shard's inputs, streaming its rows of the index and of the sources in blocks."""
        lo, hi = model_plan(read_plan(plan), model).shard(shard)
        rows, src = open_index(index), NpyReader(sources, np.dtype("<i8"))
        # What the embeddings are made from: the range, the index rows and the bytes of the
        # shard's span of the sequence file (one changed base changes it).
        digest = hashlib.sha256(f"{lo}:{hi}|".encode())
        distinct, start, end = [], 0, 0
        for a in range(lo, hi, block):
            b = min(hi, a + block)
            part = rows.read(a, b)
            digest.update(part.tobytes())
            offsets, lengths = family(model).spans(part)
            start = int(offsets[0]) if a == lo else start
            end = int(offsets[-1] + lengths[-1])
            distinct.append(np.flatnonzero(src.read(a, b) == np.arange(a, b)) + a)
        _digest_span(digest, sequences, start, end)
        records = np.concatenate(distinct) if distinct else np.zeros(0, np.int64)
        return cls(model, sequences, index, lo, hi, records, digest.hexdigest()[:32])

    def spans(self, records: np.ndarray, block: int = SPAN_BLOCK) -> tuple[np.ndarray, ...]:
        """Byte offsets (int64) and lengths (int32) in the sequence file of ``records``
        (ascending, within the shard), read from the index block by block."""
        rows = open_index(self.index)
        offsets, lengths = np.empty(records.size, np.int64), np.empty(records.size, np.int32)
        for a in range(self.lo, self.hi, block):
            b = min(self.hi, a + block)
            i, j = np.searchsorted(records, [a, b])
            if i < j:
                off, length = family(self.model).spans(rows.read(a, b))
                offsets[i:j], lengths[i:j] = off[records[i:j] - a], length[records[i:j] - a]
        return offsets, lengths


def _digest_span(digest, path: str, start: int, end: int) -> None:
    """Feed bytes ``start .. end-1`` of ``path`` to ``digest``, 4 MiB at a time."""
    with open(path, "rb") as handle:
        handle.seek(start)
        size = end - start
        while size > 0:
            block = handle.read(min(size, 1 << 22))
            if not block:
                raise ValueError(f"{path}: shorter than its index says")
            digest.update(block)
            size -= len(block)


@dataclass(frozen=True)
class ReferenceOutput:
    """The validation sample (record numbers) and where the job writes its shard's reference
    rows of it (:mod:`virnuc_core.jobs.references`); ``beside``: make them beside the embed loop
    (True), before it (False), or beside it where the device has room (None; see
    :mod:`virnuc_core.jobs.reference_task`)."""

    sample: np.ndarray
    output: str
    beside: bool | None = None


def run_embed_job(
    settings: EmbedSettings, shard: ShardInput, work: str, output: str, workers: int = 2,
    reference: ReferenceOutput | None = None, shared: bool = False, gpu_limit: int = 0,
) -> None:  # fmt: skip
    """Embed the shard's distinct records into ``output`` (a rows directory, see
    :mod:`virnuc_core.jobs.store`); raises :class:`Interrupted` on a stop signal. With
    ``reference``, first the reference rows of the sampled records in the shard.
    ``shared``: run beside another job on a GPU (a shared slot), on one of the first
    ``gpu_limit`` GPUs (0: any; see :func:`virnuc_core.jobs.gpu.claim_device`)."""
    started, stop = time.time(), StopFlag()
    phases = Phases(started)
    with claim_device(knobs.lock_dir(), shared=shared, limit=gpu_limit) as claim:
        phases.mark("claim_s")
        device = torch.device(claim.device)
        log.info("device %s (%s, GPU index %s)", device, claim.source, claim.index)
        if device.type == "cpu" and workers:  # the readers have the job's other threads
            torch.set_num_threads(max(1, torch.get_num_threads() - workers))
        encoder = load_encoder(settings, device, keep_reference=reference is not None)
        phases.mark("load_s")
        described = encoder.describe()
        made_with = settings_fingerprint(settings, described)
        ckpt = ShardCheckpoint.open(
            work, f"{made_with}|{shard.digest}", encoder.dim, shard.lo, shard.hi,
            settings.checkpoint_every, settings.checkpoint_seconds, settings.keep_stale,
        )  # fmt: skip
        phases.mark("open_s")
        todo = _pending(ckpt, shard)
        attrs = output_attrs(settings, described, device)
        refs = None
        if reference is not None:  # kept beside the work state until the shard is done
            refs = ReferenceTask(encoder, shard, reference.sample, made_with,
                                 f"{work}.reference.h5", attrs)  # fmt: skip
            refs.prepare(reference.beside)  # the host's fp32 copy gone before the readers fork
            phases.mark("reference_s")
        # the readers are forked before the reference rows' thread starts, and stopped however
        # the job ends
        with contextlib.closing(_read_tokens(encoder, shard, todo, workers)) as tokens:
            if refs is not None:
                refs.begin()
            progress = Progress(shard.distinct.size, settings.progress_seconds, log,
                                done=ckpt.n_committed)  # fmt: skip
            try:
                _embed_loop(encoder, settings, tokens, ckpt, progress, stop, device)
            finally:
                ckpt.commit()  # whatever ended the loop, keep what is done
                log.info(progress.line())
                if refs is not None:
                    refs.wait()  # a stopped or failed loop leaves no thread writing
        metrics = job_metrics(progress, started, claim, todo.size) | phases.seconds
        if refs is not None:
            refs.finish()
            metrics |= {"reference_beside": int(refs.beside), "reference_rows_s": refs.seconds}
            os.replace(f"{work}.reference.h5", reference.output)
        attrs["settings_fingerprint"] = made_with
        ckpt.complete(output, {"attrs": attrs, "metrics": metrics})
    log.info("wrote %s", output)


class Phases:
    """Seconds the job spent in each phase before the loop (metrics, as data): waiting for a
    device (``claim_s``), loading the encoder (``load_s``), opening the checkpoint (``open_s``),
    the validation reference rows (``reference_s``; beside the loop: readying both paths)."""

    def __init__(self, started: float) -> None:
        self.last, self.seconds = started, {}

    def mark(self, name: str) -> None:
        """End phase ``name`` now."""
        now = time.time()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now


def _pending(ckpt: ShardCheckpoint, shard: ShardInput) -> np.ndarray:
    """The shard's distinct records not committed yet (said in the log)."""
    todo = ckpt.pending(shard.distinct)
    log.info("records %d..%d: %d distinct sequences", shard.lo, shard.hi - 1, shard.distinct.size)
    if ckpt.n_committed:
        log.info("resuming: %d records committed, %d to embed", ckpt.n_committed, todo.size)
    else:
        log.info("starting: no records committed, %d to embed", todo.size)
    return todo


def _read_tokens(encoder, shard: ShardInput, todo: np.ndarray, workers: int):
    """The token ids of the records ``todo``, read by ``workers`` processes started now."""
    offsets, lengths = shard.spans(todo)
    reader = RecordReader(shard.sequences, todo, offsets, lengths, encoder.tokenize)
    return read_tokens(reader, workers)


def _embed_loop(encoder, settings, tokens, ckpt, progress, stop, device) -> None:
    batches = packed_batches(tokens, settings.token_budget, pin=device.type == "cuda")
    for recs, emb, tokens in embed_batches(_embed_fn(encoder, settings), batches, device):
        ckpt.append(recs, emb)
        progress.update(len(recs), tokens)
        if ckpt.should_commit():
            ckpt.commit()
        stop.check()


def settings_fingerprint(settings: EmbedSettings, described: dict) -> str:
    """What must match for shards to be merged and work to be resumed: the settings that change
    embeddings and the model's weights (their checksum: every encoder describes one)."""
    weights = described.get("weights_sha256")
    if not weights:  # without it, work made from other weights would be resumed
        raise ValueError(f"the {settings.model} encoder describes no weights_sha256 (a bug)")
    return f"{settings.fingerprint()}|weights={weights}"


def job_metrics(progress: Progress, started: float, claim, embedded: int) -> dict:
    """The job's metrics, as data (the report reads them from the shard file)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    readers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "records_embedded": int(embedded),
        "tokens_per_s": round(progress.tokens_per_s(), 1),
        "records_per_s": round(progress.records_per_s(), 2),
        "loop_s": round(progress.elapsed(), 3),
        "wall_s": round(time.time() - started, 3),
        "max_rss_mb": round(own, 1),
        "reader_max_rss_mb": round(readers, 1),
        # the GPU memory the job's tensors took at most (what share_gpu must fit beside another)
        "gpu_max_allocated_mb": round(_gpu_peak_mb(claim.device), 1),
        "torch_device": str(claim.device),
        "device_source": claim.source,
        "gpu_index": -1 if claim.index is None else int(claim.index),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _gpu_peak_mb(device: str) -> float:
    dev = torch.device(device)
    return torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else 0.0


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
