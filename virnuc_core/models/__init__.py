"""Embedding models: the contract every encoder meets, and loading one for a job.

An encoder (:class:`Encoder`) is built once per job by :func:`load_encoder`, which decides its
device, precision, attention backend and compiling from the job's settings; after that the
encoder only embeds. What else the workflow knows about each model (the file it reads, its
index columns, token costs, published name) is its family in :mod:`virnuc_core.families`.

To add a third model: write its encoder module here (fast packed path, plain reference path,
``describe``), add its :class:`~virnuc_core.families.Family`, and its key to the config
schema's ``models``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from virnuc_core.families import family
from virnuc_core.packing import PackedBatch
from virnuc_core.settings import EmbedSettings


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


def load_encoder(
    settings: EmbedSettings,
    device: torch.device | str,
    reference: bool = False,
    keep_reference: bool = False,
) -> Encoder:
    """The encoder ``settings`` names, on ``device``, with its precision decided here once:
    the settings' (``fp32`` off CUDA), or fp32 for the reference path (``reference=True``).

    ``keep_reference``: the settings' precision, and keep what the reference path needs from
    this load (an embed job making its shard's validation references first; then
    :meth:`Encoder.release_reference`)."""
    device = torch.device(device)
    precision = "fp32" if reference else settings.resolved_precision(device.type)
    if settings.model_spec == "standin":  # bench/scale.py only: random rows, not a model
        from virnuc_core.models.standin import StandInEncoder

        return StandInEncoder(settings.model, device)
    return family(settings.model).load(settings, device, precision, reference or keep_reference)
