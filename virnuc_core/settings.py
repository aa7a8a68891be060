"""Every tunable of the workflow, in one place.

Defaults live in the config schema (``workflow/schemas/config.schema.yaml``) and nowhere else:
:func:`with_defaults` fills a config from it (Snakemake's ``validate`` does the same for a run),
and :class:`WorkflowSettings` turns the filled config into typed values, one settings object per
job (:meth:`WorkflowSettings.embed`, :attr:`WorkflowSettings.validate`). The few ``VIRNUC_*``
environment variables (test hooks, a lock-directory override) are read here and nowhere else.
Outputs record the settings that made them (:meth:`EmbedSettings.attrs`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

# workflow/schemas/config.schema.yaml, through the package's link to it (a copy when installed)
SCHEMA = Path(__file__).resolve().parent / "config.schema.yaml"
PRECISIONS = ("fp32", "bf16", "fp16")  # on GPUs; CPU jobs run fp32 (registry.load_encoder)
# Config keys of levers that left the library in issue 36 (their figures: bench/results/README.md,
# "Levers removed from the library"), refused with what to do instead.
REMOVED_KEYS = {
    "fused_kernels": "the fused Triton kernels are the one GPU path (eager PyTorch on CPUs)",
    "gelu_in_matmul": "fc1 always takes its GELU in cuBLASLt's matmul epilogue on GPUs",
    "compile_mode": "torch.compile runs in its default mode (the only one measured)",
}

# Environment variables: test hooks and a lock-directory override, never tuning knobs.
ENV_LOCK_DIR = "VIRNUC_GPU_LOCK_DIR"
# `shards: auto` as the run decided it, for the jobs it spawns (workflow/rules/common.smk)
ENV_SHARDS = "VIRNUC_SHARDS"
ENV_BATCH_DELAY = "VIRNUC_TEST_BATCH_DELAY"  # test hook: seconds of sleep per batch (slow jobs)
ENV_OOM_ABOVE = "VIRNUC_TEST_OOM_ABOVE"  # test hook: CUDA OOM while token_budget exceeds this


@functools.cache
def schema() -> dict:
    """The config schema (the one home of every default)."""
    return yaml.safe_load(SCHEMA.read_text())


def _fill(config: dict, properties: Mapping[str, Any]) -> None:
    for key, spec in properties.items():
        if key not in config and "default" in spec:
            config[key] = copy.deepcopy(spec["default"])
        if isinstance(config.get(key), dict) and "properties" in spec:
            _fill(config[key], spec["properties"])


def with_defaults(config: Mapping[str, Any]) -> dict:
    """A copy of ``config`` with every schema default filled in (nested objects too)."""
    out = copy.deepcopy(dict(config))
    _fill(out, schema()["properties"])
    return out


MODELS = tuple(schema()["properties"]["models"]["properties"])  # registry.FAMILIES has each


@dataclass(frozen=True)
class EmbedSettings:
    """Settings of one embedding job (one model, one shard); see the schema for each key."""

    model: str  # a family of virnuc_core.registry
    model_spec: str  # a hub name, a local path, or "tiny"
    precision: str  # on CPU, fp32 is always used (see resolved_precision)
    token_budget: int
    attention_backend: str
    compile: bool  # torch.compile on CUDA, for a model whose loader compiles (the registry's)
    repr_layer: int | None  # ESM-2 only; None = the model's last layer
    checkpoint_every: int  # records between commits
    checkpoint_seconds: float  # and at least this often
    progress_seconds: float
    keep_stale: bool  # keep set-aside work folders once the shard completes
    seed: int = 0  # the tiny models' seed (not a config key)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.token_budget < 64:
            raise ValueError(f"token_budget must be >= 64, got {self.token_budget}")

    def attrs(self) -> dict[str, Any]:
        """Flat attributes for HDF5 outputs (None becomes -1 / '' so h5py can store it)."""
        out = {}
        for key, value in asdict(self).items():
            if value is None:
                value = -1 if key == "repr_layer" else ""
            out[key] = value
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)

    def rule_params(self) -> dict[str, Any]:
        """Plain values but the token budget: how the embed rule hands settings to its script.
        The budget travels alone, as the rule's resource (halved on each retry; changing it
        reruns nothing): ``EmbedSettings(**params, token_budget=resources.token_budget)``."""
        return {k: v for k, v in asdict(self).items() if k != "token_budget"}

    def to_json(self) -> str:
        """One-line JSON of :meth:`as_dict`."""
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EmbedSettings:
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        return cls(**json.loads(text))

    def fingerprint(self) -> str:
        """What must match for a checkpoint to be resumed (not the checkpoint cadence)."""
        keep = {"model", "model_spec", "precision", "repr_layer", "seed"}
        return json.dumps({k: v for k, v in asdict(self).items() if k in keep}, sort_keys=True)


@dataclass(frozen=True)
class ValidateSettings:
    """Settings of the embedding validation step."""

    n: int
    mean_cosine: float
    min_cosine: float
    seed: int


@dataclass(frozen=True)
class WorkflowSettings:
    """The whole config, defaults filled from the schema, as typed values."""

    chunk_length: int
    shards: int | str  # a number, or "auto": see shard_count
    models: Mapping[str, str]
    models_dir: str
    dnabert_revision: str | None
    precision: str
    token_budget: Mapping[str, int]
    attention_backend: str
    compile: Mapping[str, bool]  # per model; a loader that never compiles ignores it
    share_gpu: Mapping[str, bool]  # scheduling only: the rule's resources, not a job setting
    esm_repr_layer: int | None
    checkpoint_every: int
    checkpoint_seconds: float
    progress_seconds: float
    dedupe: bool
    keep_stale: bool
    reader_workers: int
    embed_retries: int
    validate: ValidateSettings
    classifier: str | None
    viral_fasta: bool
    min_score: float | None  # null: the original rule (summary.py call_rule)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WorkflowSettings:
        """Build from a config mapping (schema defaults filled in for missing keys)."""
        refuse_removed_keys(config)
        c = with_defaults(config)
        per = ("compile", "share_gpu")
        names = {f for f in cls.__dataclass_fields__ if f not in ("validate", *per)}
        return cls(
            **{k: c[k] for k in names},
            **{k: per_model(c[k], schema()["properties"][k]["default"]) for k in per},
            validate=ValidateSettings(**c["validate"]),
        )

    def shard_count(self, gpus: int) -> int:
        """Shards per sample and model: the configured number, or for ``auto`` the run's GPUs
        (``--resources gpu``), at least 1: one long ESM-2 job per GPU, the model loaded once."""
        return self.shards if isinstance(self.shards, int) else max(1, gpus)

    def embed(self, model: str, attempt: int = 1) -> EmbedSettings:
        """Settings of one embed job; the token budget halves on each retry (CUDA OOM)."""
        budget = max(64, int(self.token_budget[model]) >> max(0, attempt - 1))
        return EmbedSettings(
            model=model,
            model_spec=self.models[model],
            precision=self.precision,
            token_budget=budget,
            attention_backend=self.attention_backend,
            compile=bool(self.compile[model]),
            # a model with a representation-layer knob has the key <model>_repr_layer
            repr_layer=getattr(self, f"{model}_repr_layer", None),
            checkpoint_every=self.checkpoint_every,
            checkpoint_seconds=self.checkpoint_seconds,
            progress_seconds=self.progress_seconds,
            keep_stale=self.keep_stale,
        )

    def validate_dict(self) -> dict[str, Any]:
        """The validation settings as plain values (for the step script)."""
        return asdict(self.validate)


def per_model(value: bool | Mapping[str, bool], default: Mapping[str, bool]) -> dict[str, bool]:
    """A per-model switch from a mapping (models left out take ``default``'s value), or one
    boolean for both models."""
    if isinstance(value, bool):
        return dict.fromkeys(MODELS, value)
    return {m: bool(value.get(m, default[m])) for m in MODELS}


def refuse_removed_keys(config: Mapping[str, Any]) -> None:
    """ValueError naming each config key of a removed lever that ``config`` still sets, and
    what runs instead (the schema refuses them too, without saying why)."""
    found = [k for k in REMOVED_KEYS if k in config]
    if found:
        lines = "; ".join(f"{k!r}: {REMOVED_KEYS[k]}" for k in found)
        raise ValueError(
            f"config key(s) {', '.join(repr(k) for k in found)} no longer exist ({lines}). "
            "Delete them from the config file; their measurements are in "
            "bench/results/README.md, 'Levers removed from the library'."
        )


def lock_dir() -> str:
    """Where local GPU slot locks live (shared by every job on this machine)."""
    return os.environ.get(
        ENV_LOCK_DIR, os.path.join(os.environ.get("TMPDIR", "/tmp"), "virnuc-gpu-locks")
    )


@dataclass(frozen=True)
class FaultHooks:
    """Fault injection for the workflow tests (environment variables; off unless set)."""

    batch_delay: float = 0.0  # seconds of sleep before each batch: makes jobs slow to kill
    oom_above: int = 0  # raise a CUDA OOM while the token budget exceeds this (0: never)

    @classmethod
    def from_env(cls) -> FaultHooks:
        """The hooks set in this process's environment."""
        return cls(
            batch_delay=float(os.environ.get(ENV_BATCH_DELAY, "0")),
            oom_above=int(os.environ.get(ENV_OOM_ABOVE, "0")),
        )
