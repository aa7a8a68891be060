"""A stand-in encoder for measuring the workflow itself at scale (model spec ``standin``).

It is not a model: it turns each sequence into one of 4,096 fixed random rows of the real width
(768 for DNABERT-S, 2560 for ESM-2 3B), picked by a hash of the sequence's bytes, so that
``bench/scale.py`` can push millions of frames through the real rules (readers, packing, the
checkpoint store, finalize, features, predict, validation) on a CPU in minutes. Equal sequences
get equal rows, and its reference path gives the same rows as its fast path, so duplicate
removal and validation behave as with a real model. Outputs made with it say so in their
attributes (``encoder.model`` = ``standin``). Never use it for predictions.
"""

from __future__ import annotations

import numpy as np
import torch

from virnuc_core.engine.packing import PackedBatch

WIDTHS = {"dnabert": 768, "esm": 2560}  # DNABERT-S, ESM-2 3B
ROWS = 4096


class StandInEncoder:
    """Random rows of the real width, one per distinct sequence (see the module docstring)."""

    def __init__(self, model: str, device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.name, self.dim, self.device = model, WIDTHS[model], torch.device(device)
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(ROWS, self.dim, generator=gen).to(self.device)

    def tokenize(self, seqs: list[str]) -> list[np.ndarray]:
        """The sequence's bytes as token ids (cheap; packing sees real lengths)."""
        return [np.frombuffer(s.encode("ascii"), np.uint8).astype(np.int64) for s in seqs]

    def _rows(self, keys: torch.Tensor) -> torch.Tensor:
        return self.table[torch.remainder(keys, ROWS)]

    @torch.inference_mode()
    def embed_packed(self, batch: PackedBatch) -> torch.Tensor:
        """(n, dim) float32: the row of each sequence's hash (tokens weighted by position)."""
        weights = (batch.positions + 1) * 2654435761 % 4294967291
        keys = torch.zeros(batch.num_seqs, dtype=torch.int64, device=batch.input_ids.device)
        keys.index_add_(0, batch.seq_ids, batch.input_ids * weights)
        return self._rows(keys)

    def reference_embed(self, seqs: list[str]) -> np.ndarray:
        """The same rows, one sequence at a time."""
        out = np.empty((len(seqs), self.dim), np.float32)
        for i, ids in enumerate(self.tokenize(seqs)):
            pos = torch.arange(ids.size, dtype=torch.int64)
            key = (torch.as_tensor(ids) * ((pos + 1) * 2654435761 % 4294967291)).sum()
            out[i] = self._rows(key[None])[0].cpu().numpy()
        return out

    def release_reference(self) -> None:
        """Nothing to free: both paths read the same table."""

    def ready_fast_path(self) -> None:
        """Nothing to build: both paths read the same table."""

    def reference_bytes(self) -> int:
        return 0

    def describe(self) -> dict[str, str | int]:
        return {
            "model": "standin",
            "dim": self.dim,
            "note": "stand-in for scale measurements: random rows, not a model",
            "weights_sha256": "standin",
            "weights_sha256_of": "none",
            "attention_backend": "none",
            "precision": "fp32",
        }
