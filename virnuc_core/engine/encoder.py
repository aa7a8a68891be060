"""The contract every encoder meets: what an embed or validation job uses of a model.

An encoder is built once per job from resolved values (device, precision, attention backend),
by its family's loader in :mod:`virnuc_core.registry`; after that it only embeds.

To add a third model: write its encoder module in :mod:`virnuc_core.engine.models` (fast packed
path, plain reference path, ``describe``), add its :class:`~virnuc_core.registry.Family`, and its
key to the config schema's ``models``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from virnuc_core.engine.packing import PackedBatch


@runtime_checkable
class Encoder(Protocol):
    """What an embed or validation job uses of a model."""

    name: str  # the family: "dnabert" or "esm"
    dim: int  # width of one embedding

    def tokenize(self, seqs: list[str]) -> list[np.ndarray]:
        """Token ids of each sequence (int64), special tokens included, as the original."""

    def embed_packed(self, batch: PackedBatch) -> torch.Tensor:
        """(n, dim) float32: one pooled embedding per packed sequence (the fast path)."""

    def reference_embed(self, seqs: list[str]) -> np.ndarray:
        """(n, dim) float32 by the plain v1 path, fp32, one sequence at a time (validation)."""

    def release_reference(self) -> None:
        """Free what only the reference path needs (an embed job, once its shard's reference
        rows are made); the path still works afterwards, rebuilding what it needs."""

    def ready_fast_path(self) -> None:
        """Build the fast path now, keeping the reference path's weights, on the device (an
        embed job about to make its reference rows beside the loop, in another thread)."""

    def reference_bytes(self) -> int:
        """Device memory the reference path's weights take beside the fast path's (0 when the
        two share them)."""

    def describe(self) -> dict[str, str | int | float]:
        """What made the embeddings, for the outputs' attributes: at least ``model``,
        ``precision``, ``attention_backend`` and ``weights_sha256``."""
