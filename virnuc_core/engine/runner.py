"""The inference loop: read and tokenize in DataLoader workers, pack, copy ahead, embed, pool.

Data path, top to bottom:

1. :class:`RecordReader` (in DataLoader workers) reads a shard's records by byte offset and
   tokenizes them, yielding small lists of ``(record, token_ids)``.
2. :func:`packed_batches` (main process) packs them into token-budget batches in pinned memory.
3. :func:`embed_batches` copies batch i+1 to the GPU on a side stream while batch i computes,
   pools on the GPU, and copies pooled rows back asynchronously; rows are handed out one batch
   late, once their copy has finished, so the host never waits on the GPU mid-pipeline.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Generator, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from virnuc_core.engine.packing import PackedBatch, make_batch, pack_stream
from virnuc_core.util.fasta import read_sequences
from virnuc_core.util.files import close_inherited_locks

Tokenize = Callable[[list[str]], list[np.ndarray]]


class RecordReader(IterableDataset):
    """Reads records by offset and tokenizes them; each DataLoader worker takes every k-th block."""

    def __init__(
        self,
        path: str,
        records: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        tokenize: Tokenize,
        block: int = 256,
    ) -> None:
        self.path, self.tokenize, self.block = path, tokenize, block
        self.records, self.offsets, self.lengths = records, offsets, lengths

    def __iter__(self) -> Iterator[list[tuple[int, np.ndarray]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        starts = range(worker * self.block, len(self.records), workers * self.block)
        for start in starts:
            part = slice(start, start + self.block)
            seqs = read_sequences(self.path, self.offsets[part], self.lengths[part])
            yield list(zip(self.records[part].tolist(), self.tokenize(seqs), strict=True))


def _reader_start(_worker: int) -> None:
    """A reader process's start: leave the job's locks and SIGTERM to the main process."""
    close_inherited_locks()
    _leave_sigterm_to_the_main_process()


def _leave_sigterm_to_the_main_process() -> None:
    # SLURM (scancel, time limit) sends SIGTERM to every process of a job: a reader worker killed
    # by it would make the main process fail with a DataLoader error before it can commit and
    # exit 143. The main process stops the workers itself; if it dies, they follow it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _as_is(block: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
    return block


def read_tokens(reader: RecordReader, workers: int) -> Generator[tuple[int, np.ndarray]]:
    """All ``(record, token_ids)`` of ``reader``, read by ``workers`` background processes,
    which start here, not at the first item: forked before the job starts another thread.
    Closing the generator stops them (they ignore SIGTERM: a process exiting with them alive
    would wait for them)."""
    loader = DataLoader(
        reader,
        batch_size=None,
        # Blocks pass as they are: the default would turn every array into a tensor in shared
        # memory, one segment per record, and that cost 4x the tokenizing (DNABERT-S).
        collate_fn=_as_is,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=_reader_start,
    )
    return _items(iter(loader))  # forks the workers now


def _items(blocks: Iterator[list[tuple[int, np.ndarray]]]) -> Generator[tuple[int, np.ndarray]]:
    # the DataLoader's iterator stops its workers when freed: when this generator finishes or
    # is closed (CPython frees its frame, the one reference to ``blocks``)
    for block in blocks:
        yield from block


def packed_batches(
    items: Iterable[tuple[int, np.ndarray]], token_budget: int, pin: bool
) -> Iterator[tuple[np.ndarray, PackedBatch]]:
    """Pack ``items`` into batches of at most ``token_budget`` tokens: (records, batch)."""
    for group in pack_stream(items, token_budget):
        batch = make_batch([tokens for _, tokens in group])
        records = np.fromiter((r for r, _ in group), dtype=np.int64, count=len(group))
        yield records, batch.pin_memory() if pin else batch


def embed_batches(
    embed: Callable[[PackedBatch], torch.Tensor],
    batches: Iterable[tuple[np.ndarray, PackedBatch]],
    device: torch.device,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Run ``embed`` over ``batches``: yields (records, float32 embeddings, tokens) per batch."""
    if device.type != "cuda":
        for records, batch in batches:
            yield records, embed(batch).numpy(), batch.input_ids.numel()
        return
    it = iter(batches)
    copy_stream = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    current = _copy_ahead(it, device, copy_stream)
    pending = None
    while current is not None:
        records, batch, ready = current
        compute.wait_event(ready)
        for t in (batch.input_ids, batch.cu_seqlens, batch.seq_ids, batch.positions):
            t.record_stream(compute)  # allocated on the copy stream, used on this one
        pooled = embed(batch)
        host = torch.empty(pooled.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(pooled, non_blocking=True)
        done = torch.cuda.Event()
        done.record(compute)
        # The GPU works on this batch while the CPU packs the next and queues its copy.
        current = _copy_ahead(it, device, copy_stream)
        if pending is not None:
            yield _collect(*pending)
        pending = (records, host, done, batch.input_ids.numel())
    if pending is not None:
        yield _collect(*pending)


def _copy_ahead(it, device, stream):
    """Queue the next batch's host-to-GPU copy on ``stream``; None when the input is done."""
    nxt = next(it, None)
    if nxt is None:
        return None
    records, batch = nxt
    with torch.cuda.stream(stream):
        on_device = batch.to(device, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(stream)
    return records, on_device, ready


def _collect(records, host, done, tokens):
    done.synchronize()
    return records, host.numpy(), tokens
