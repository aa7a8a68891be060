"""Embedding models, one module per family (ESM-2, DNABERT-S), behind one small interface.

Each family module has ``load(spec, device, precision, backend, ...)`` returning an encoder with
``name``, ``dim``, ``tokenize``, ``embed_packed`` (fast path), ``reference_embed`` (the slow v1
path used by validation) and ``describe``.
"""

from __future__ import annotations

import torch

from virnuc_core.settings import EmbedSettings


def load_encoder(settings: EmbedSettings, device: torch.device | str, reference: bool = False):
    """Load the encoder that ``settings`` names on ``device``.

    ``reference=True`` loads it in fp32 (the precision of the v1 path used by validation).
    """
    device = torch.device(device)
    precision = "fp32" if reference else settings.resolved_precision(device.type)
    if settings.model_spec == "standin":  # bench/scale.py only: random rows, not a model
        from virnuc_core.models.standin import StandInEncoder

        return StandInEncoder(settings.model, device)
    if settings.model == "esm":
        from virnuc_core.models import esm2

        return esm2.load(
            settings.model_spec,
            device=device,
            precision=precision,
            backend=settings.attention_backend,
            repr_layer=settings.repr_layer,
            compile=settings.compile,
            compile_mode=settings.compile_mode,
            fused=settings.fused_kernels,
        )
    from virnuc_core.models import dnabert

    return dnabert.load(
        settings.model_spec,
        device=device,
        precision=precision,
        backend=settings.attention_backend,
        compile=settings.compile,
        compile_mode=settings.compile_mode,
    )
