"""Packing many sequences into one token stream, and the layout of a packed batch.

Packing replaces padding: sequences are laid back to back in a 1-D token tensor, and
``cu_seqlens`` (cumulative lengths, ``[0, l0, l0+l1, ...]``) says where each one starts. Matrix
multiplications then see only real tokens, and attention stays within each sequence.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


def pack_ffd(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """First-fit-decreasing: group indices into batches whose lengths sum to <= ``token_budget``.

    Longest first; each sequence goes into the first open batch with room, or opens a new one.
    A sequence longer than the budget gets a batch of its own (it cannot be split).
    Returns lists of indices into ``lengths``; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    room: list[int] = []
    # Lengths only decrease, so a batch whose room is below the current length never fits again:
    # a heap keyed on batch number over batches with room lets "first fit" skip them cheaply.
    open_heap: list[int] = []
    for i in order:
        need = lengths[i]
        skipped = []
        placed = False
        while open_heap:
            b = heapq.heappop(open_heap)
            if room[b] >= need:
                batches[b].append(i)
                room[b] -= need
                if room[b] > 0:
                    heapq.heappush(open_heap, b)
                placed = True
                break
            skipped.append(b)
        for b in skipped:  # still open for shorter sequences later
            heapq.heappush(open_heap, b)
        if not placed:
            batches.append([i])
            room.append(max(0, token_budget - need))
            if room[-1] > 0:
                heapq.heappush(open_heap, len(batches) - 1)
    return batches


def pack_stream(
    items: Iterable[tuple[int, np.ndarray]], token_budget: int, buffer_tokens: int | None = None
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Pack a stream of ``(record, token_ids)`` into batches of at most ``token_budget`` tokens.

    Keeps about ``buffer_tokens`` (default 8 budgets) of sequences in hand and packs them with
    :func:`pack_ffd`; full batches are yielded, the last, partly filled batch of each round goes
    back into the buffer so batches stay full. Every item is yielded exactly once.
    """
    buffer_tokens = buffer_tokens or 8 * token_budget
    held: list[tuple[int, np.ndarray]] = []
    held_tokens = 0
    for item in items:
        held.append(item)
        held_tokens += len(item[1])
        if held_tokens >= buffer_tokens:
            batches = pack_ffd([len(t) for _, t in held], token_budget)
            keep = min(batches, key=lambda b: sum(len(held[i][1]) for i in b))
            for batch in batches:
                if batch is not keep:
                    yield [held[i] for i in batch]
            held = [held[i] for i in keep]
            held_tokens = sum(len(t) for _, t in held)
    if held:
        for batch in pack_ffd([len(t) for _, t in held], token_budget):
            yield [held[i] for i in batch]


@dataclass
class PackedBatch:
    """One packed batch: tokens back to back, and where each sequence lies.

    ``seq_ids`` (sequence number of every token) and ``positions`` (a token's position inside its
    own sequence) are computed once here, vectorised, and shared by every layer.
    """

    input_ids: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (n+1,) int32
    max_seqlen: int
    seq_ids: torch.Tensor  # (T,) int64
    positions: torch.Tensor  # (T,) int64
    # Per-batch attention layouts (padding index, bias, block mask), built by the first layer
    # that needs them and reused by the others.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_seqs(self) -> int:
        """Number of sequences in the batch."""
        return self.cu_seqlens.numel() - 1

    def lengths(self) -> torch.Tensor:
        """Length of every sequence, (n,) int64."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        """The same batch on ``device``."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return PackedBatch(
            move(self.input_ids),
            move(self.cu_seqlens),
            self.max_seqlen,
            move(self.seq_ids),
            move(self.positions),
        )

    def pin_memory(self) -> PackedBatch:
        """The same batch in page-locked host memory (for asynchronous copies to the GPU)."""
        return PackedBatch(
            self.input_ids.pin_memory(),
            self.cu_seqlens.pin_memory(),
            self.max_seqlen,
            self.seq_ids.pin_memory(),
            self.positions.pin_memory(),
        )


def make_batch(token_lists: Sequence[np.ndarray]) -> PackedBatch:
    """Lay ``token_lists`` back to back (on the CPU) and compute the batch layout."""
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    if len(lengths) == 0 or lengths.min() < 1:
        raise ValueError("a packed batch needs at least one sequence, each of >= 1 token")
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    seq_ids = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    positions = np.arange(int(cu[-1]), dtype=np.int64) - cu[:-1][seq_ids]
    return PackedBatch(
        input_ids=torch.from_numpy(np.concatenate(token_lists).astype(np.int64, copy=False)),
        cu_seqlens=torch.from_numpy(cu),
        max_seqlen=int(lengths.max()),
        seq_ids=torch.from_numpy(seq_ids),
        positions=torch.from_numpy(positions),
    )


def segment_mean(
    values: torch.Tensor, seq_ids: torch.Tensor, weight: torch.Tensor, n: int
) -> torch.Tensor:
    """Weighted mean of ``values`` rows per sequence, all sequences at once (no host sync).

    ``weight`` (T,) is 1 for tokens that count and 0 for tokens left out (BOS, EOS, ...).
    Sums in float32 whatever the input precision. Returns (n, dim) float32.
    """
    w = weight.to(torch.float32)
    sums = torch.zeros(n, values.shape[-1], dtype=torch.float32, device=values.device)
    sums.index_add_(0, seq_ids, values.to(torch.float32) * w[:, None])
    counts = torch.zeros(n, dtype=torch.float32, device=values.device).index_add_(0, seq_ids, w)
    return sums / counts.clamp_min(1.0)[:, None]
