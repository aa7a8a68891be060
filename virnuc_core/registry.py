"""The model families the workflow knows, in one registry: what each reads and costs.

A :class:`Family` says everything the workflow needs to know about a model besides its encoder
(:mod:`virnuc_core.engine.encoder`): which file of the index stage it reads (nucleotides or
proteins) and which index columns point into it, how many tokens a sequence costs (for the
shard plan), its published name, architecture and width (for the run plan), how it loads,
where its files come from and go in the models folder
(:class:`~virnuc_core.engine.model_files.ModelSource`), and its colour in the figures. The
order of :data:`FAMILIES` is the order of the models everywhere: features.h5's columns (the
classifier's input), tables and figures. Nothing outside this module and the model files
(``engine/models/``) tests a model's name to decide what to do (tests/test_model_facts.py).
Light: no torch at import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from virnuc_core.data.index import sequence_spans
from virnuc_core.engine import model_files
from virnuc_core.engine.model_files import ModelSource
from virnuc_core.settings import EmbedSettings, WorkflowSettings

if TYPE_CHECKING:
    import torch

    from virnuc_core.engine.encoder import Encoder


def _esm_cost(lengths: np.ndarray) -> np.ndarray:
    return np.minimum(lengths, 1024) + 2  # fair-esm's truncation, + BOS and EOS


def _dnabert_cost(lengths: np.ndarray) -> np.ndarray:
    # BPE tokens are not known before tokenizing: about a quarter of the bases, + [CLS] [SEP]
    # (the published tokenizer gives at most 142 tokens for 501 bases)
    return -(-lengths // 4) + 2


def _backend(settings: EmbedSettings, device: torch.device, alibi: bool) -> str:
    """The attention backend ``auto`` (or the one asked for) is on this device."""
    from virnuc_core.engine.attention import choose_backend

    return choose_backend(settings.attention_backend, device.type, alibi)


def _load_esm(
    settings: EmbedSettings, device: torch.device, precision: str, reference: bool
) -> Encoder:
    """ESM-2: fused Triton kernels on CUDA with Triton, their eager PyTorch twins elsewhere
    (decided per tensor by the engine: :func:`virnuc_core.engine.fused.triton_ok`); never
    compiled."""
    from virnuc_core.engine.models import esm2

    backend = _backend(settings, device, alibi=False)
    return esm2.load(settings.model_spec, device, precision, backend,
                     repr_layer=settings.repr_layer, keep_reference=reference)  # fmt: skip


def _load_dnabert(
    settings: EmbedSettings, device: torch.device, precision: str, reference: bool
) -> Encoder:
    """DNABERT-S: compiled on CUDA (``compile``), eager elsewhere."""
    from virnuc_core.engine.models import dnabert

    del reference  # its reference path reads the weights the encoder already holds
    backend = _backend(settings, device, alibi=True)
    compiled = settings.compile and device.type == "cuda"
    return dnabert.load(settings.model_spec, device, precision, backend, compiled)


def _is_3b(spec: str) -> bool:
    return "t36_3B" in Path(spec).name


def _is_dnabert_s(spec: str) -> bool:
    config = Path(spec) / "config.json"
    if spec == "zhihan1996/DNABERT-S":
        return True
    if not config.is_file():
        return False
    c = json.loads(config.read_text())
    return (c.get("hidden_size"), c.get("num_hidden_layers")) == (768, 12)


def _is_esm_hub_name(spec: str) -> bool:
    return spec.startswith("esm2_") and "/" not in spec and not spec.endswith(".pt")


def _is_hf_hub_name(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


# The fetchers live beside each model's loader, imported when a fetch runs (they need torch).
def _fetch_esm(dest: Path, name: str, revision: str | None, good) -> model_files.Fetched:
    from virnuc_core.engine.models import esm2_load

    return esm2_load.fetch(dest, name, revision, good)


def _fetch_dnabert(dest: Path, name: str, revision: str | None, good) -> model_files.Fetched:
    from virnuc_core.engine.models import dnabert_load

    return dnabert_load.fetch(dest, name, revision, good)


def _newest_dnabert(repo: str) -> str:
    from virnuc_core.engine.models import dnabert_load

    return dnabert_load.newest_commit(repo)


@dataclass(frozen=True)
class Family:
    """One model family and everything the workflow needs to know about it."""

    name: str  # config key, file and dataset names
    title: str  # for people
    sequences: str  # the index stage's file it reads
    columns: tuple[str, str]  # index columns: byte offset and length of its sequence
    published: str  # the published model (hub or fair-esm name)
    published_arch: str  # its architecture, as the run plan names it
    published_width: int
    tokens_estimated: bool  # whether token_cost is an estimate
    token_cost: Callable[[np.ndarray], np.ndarray]  # tokens per sequence, from its length
    is_published_arch: Callable[[str], bool]  # does a spec (name or path) have that arch?
    load: Callable[[EmbedSettings, torch.device, str, bool], Encoder]  # ..., reference path?
    files: ModelSource  # where its files come from and go in the models folder
    colour: str  # in the figures
    revision_key: str | None = None  # the config key pinning its commit (files.pinned)
    # Snakemake priority of its embed jobs: the long job (ESM-2, ~95% of the GPU time) starts
    # first, before the short jobs that share its GPU take the cores it needs
    embed_priority: int = 0

    def spans(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Byte offsets and lengths of this family's sequences for frames-index ``rows``."""
        return sequence_spans(rows, self.columns)

    def architecture(self, spec: str) -> str | None:
        """The published architecture's name when ``spec`` has it, else None."""
        return self.published_arch if self.is_published_arch(spec) else None


DNABERT_S_FILES = ModelSource(
    "DNABERT-S", "the Hugging Face hub", "dnabert-s", _is_hf_hub_name, _fetch_dnabert,
    newest_revision=_newest_dnabert,
)  # fmt: skip
ESM2_FILES = ModelSource(
    "ESM-2", "fair-esm's download server", "esm2", _is_esm_hub_name, _fetch_esm,
    weights=lambda name: f"{name}.pt", other_names="fair-esm model name",
)  # fmt: skip

# In the order of features.h5's columns (the classifier's input) and of every table and figure.
FAMILIES: dict[str, Family] = {
    "dnabert": Family(
        "dnabert", "DNABERT-S", "frames.fa", ("nt_offset", "nt_length"),
        "zhihan1996/DNABERT-S", "DNABERT-S", 768, True, _dnabert_cost, _is_dnabert_s,
        _load_dnabert, DNABERT_S_FILES, "#4C72B0", revision_key="dnabert_revision",
    ),
    "esm": Family(
        "esm", "ESM-2", "proteins.faa", ("aa_offset", "aa_length"), "esm2_t36_3B_UR50D",
        "ESM-2 3B", 2560, False, _esm_cost, _is_3b, _load_esm, ESM2_FILES, "#55A868",
        embed_priority=10,
    ),
}  # fmt: skip


def family(name: str) -> Family:
    """The family of model ``name``; ValueError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}: the models are {sorted(FAMILIES)}")
    return FAMILIES[name]


def load_encoder(
    settings: EmbedSettings,
    device: torch.device | str,
    reference: bool = False,
    keep_reference: bool = False,
) -> Encoder:
    """The encoder ``settings`` names, on ``device``, built from values resolved here once:
    the precision (the settings', ``fp32`` off CUDA and for the reference path,
    ``reference=True``), and in the family's loader the attention backend and compiling. The
    engine never sees the settings.

    ``keep_reference``: the settings' precision, and keep what the reference path needs from
    this load (an embed job making its shard's validation references first; then
    :meth:`Encoder.release_reference`)."""
    import torch

    device = torch.device(device)
    precision = "fp32" if reference or device.type != "cuda" else settings.precision
    if settings.model_spec == "standin":  # bench/scale.py only: random rows, not a model
        from virnuc_core.engine.models.standin import StandInEncoder

        return StandInEncoder(settings.model, device)
    return family(settings.model).load(settings, device, precision, reference or keep_reference)


# ------------------------------------------------------------------ the models folder


def resolve_model_spec(
    model: str,
    spec: str,
    models_dir: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
) -> str:
    """The local spec model ``model``'s loader gets for the config's ``models.<model>``: a hub
    name -> its copy in the locked ``models_dir`` (at ``revision``, for a model a commit pins),
    anything else -> itself (:func:`virnuc_core.engine.model_files.resolve_model_spec`)."""
    source = family(model).files
    return model_files.resolve_model_spec(model, spec, models_dir, source, revision=revision)


def local_models(settings: WorkflowSettings) -> WorkflowSettings:
    """The same settings with hub names in ``models`` replaced by their files in the locked
    ``models_dir`` (runs never download); raises ModelFilesError saying what to fetch."""
    local = {}
    for model, spec in settings.models.items():
        key = family(model).revision_key
        revision = getattr(settings, key) if key else None
        local[model] = resolve_model_spec(model, spec, settings.models_dir, revision=revision)
    return replace(settings, models=local)


def fetch_models(
    out: str | os.PathLike,
    *,
    names: Mapping[str, str] | None = None,
    revisions: Mapping[str, str | None] | None = None,
) -> Path:
    """Fetch every family's model into the models folder ``out`` and lock it
    (:func:`virnuc_core.engine.model_files.fetch_models`): the published one unless ``names``
    says another, at ``revisions[model]`` for a model a commit pins; the lock's path."""
    names = {m: (names or {}).get(m) or f.published for m, f in FAMILIES.items()}
    sources = {m: f.files for m, f in FAMILIES.items()}
    return model_files.fetch_models(out, sources, names, revisions)
