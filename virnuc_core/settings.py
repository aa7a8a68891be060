"""Every tunable of the workflow in one place.

Config keys (validated by ``workflow/schemas/config.schema.yaml``), step-script flags and the few
``VIRNUC_*`` environment variables are read here and nowhere else. Outputs record the settings
that made them through :meth:`EmbedSettings.attrs`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16", "fp8")  # fp8: ESM-2's matmuls only (DNABERT-S: bf16)
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
MODELS = ("dnabert", "esm")

# Environment variables: test hooks and a lock-directory override, never tuning knobs.
ENV_LOCK_DIR = "VIRNUC_GPU_LOCK_DIR"
ENV_BATCH_DELAY = "VIRNUC_TEST_BATCH_DELAY"  # test hook: seconds of sleep per batch (slow jobs)
ENV_OOM_ABOVE = "VIRNUC_TEST_OOM_ABOVE"  # test hook: CUDA OOM while token_budget exceeds this


@dataclass(frozen=True)
class EmbedSettings:
    """Settings of one embedding job (one model, one shard)."""

    model: str  # "dnabert" or "esm"
    model_spec: str  # a hub name, a local path, or "tiny"
    precision: str = "bf16"  # on CPU, fp32 is always used (see resolved_precision)
    token_budget: int = 65536
    attention_backend: str = "auto"
    compile: bool = False  # CUDA only; see virnuc_core/compiling.py
    compile_mode: str = "default"
    fused_kernels: bool = (
        False  # ESM-2 only: Triton kernels instead of compile (virnuc_core/fused.py)
    )
    repr_layer: int | None = None  # ESM-2 only; None = the model's last layer
    checkpoint_every: int = 2000  # records between commits
    checkpoint_seconds: float = 60.0  # and at least this often
    progress_seconds: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.token_budget < 64:
            raise ValueError(f"token_budget must be >= 64, got {self.token_budget}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}"
            )

    def resolved_precision(self, device_type: str) -> str:
        """The precision actually used: reduced precision only on CUDA; fp8 is ESM-2's alone
        (DNABERT-S then runs bf16)."""
        if device_type != "cuda":
            return "fp32"
        return "bf16" if self.precision == "fp8" and self.model != "esm" else self.precision

    def attrs(self) -> dict[str, Any]:
        """Flat attributes for HDF5 outputs (None becomes -1 / '' so h5py can store it)."""
        out = {}
        for key, value in asdict(self).items():
            if value is None:
                value = -1 if key == "repr_layer" else ""
            out[key] = value
        return out

    def replace_budget(self, token_budget: int) -> EmbedSettings:
        """The same settings with another token budget."""
        return replace(self, token_budget=int(token_budget))

    def to_json(self) -> str:
        """One-line JSON, how the workflow hands settings to a step script."""
        return json.dumps(asdict(self), sort_keys=True)

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

    n: int = 200
    mean_cosine: float = 0.999
    min_cosine: float = 0.99
    seed: int = 0


@dataclass(frozen=True)
class WorkflowSettings:
    """The whole config after schema validation, as typed values."""

    chunk_length: int
    shards: int
    models: Mapping[str, str]
    precision: str = "bf16"
    token_budget: Mapping[str, int] = field(
        default_factory=lambda: {"dnabert": 65536, "esm": 65536}
    )
    attention_backend: str = "auto"
    # Measured on an H100 (bench/results/README.md): ESM-2 3B +17%; DNABERT-S +4% at best
    compile: Mapping[str, bool] = field(default_factory=lambda: {"dnabert": False, "esm": True})
    compile_mode: str = "default"
    # ESM-2: Triton kernels between the matmuls (fp8 implies them); +4% on an H200, round 2
    fused_kernels: bool = True
    esm_repr_layer: int | None = None
    checkpoint_every: int = 2000
    checkpoint_seconds: float = 60.0
    dedupe: bool = True  # embed each distinct sequence once (virnuc_core/dedupe.py)
    reader_workers: int = 4  # reader/tokenizer processes per embed job
    validate: ValidateSettings = ValidateSettings()
    classifier: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WorkflowSettings:
        """Build from a (schema-validated) Snakemake config mapping."""
        val = dict(config.get("validate", {}))
        return cls(
            chunk_length=int(config["chunk_length"]),
            shards=int(config["shards"]),
            models=dict(config["models"]),
            precision=config.get("precision", "bf16"),
            token_budget=dict(config.get("token_budget", {"dnabert": 65536, "esm": 65536})),
            attention_backend=config.get("attention_backend", "auto"),
            compile=per_model(config.get("compile", {"dnabert": False, "esm": True})),
            compile_mode=config.get("compile_mode", "default"),
            fused_kernels=bool(config.get("fused_kernels", True)),
            esm_repr_layer=config.get("esm_repr_layer"),
            checkpoint_every=int(config.get("checkpoint_every", 2000)),
            checkpoint_seconds=float(config.get("checkpoint_seconds", 60.0)),
            dedupe=bool(config.get("dedupe", True)),
            reader_workers=int(config.get("reader_workers", 4)),
            validate=ValidateSettings(**val),
            classifier=config.get("classifier"),
        )

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
            compile_mode=self.compile_mode,
            fused_kernels=self.fused_kernels and model == "esm",
            repr_layer=self.esm_repr_layer if model == "esm" else None,
            checkpoint_every=self.checkpoint_every,
            checkpoint_seconds=self.checkpoint_seconds,
        )


def per_model(value: bool | Mapping[str, bool]) -> dict[str, bool]:
    """A per-model switch from a mapping, or one boolean for both models."""
    if isinstance(value, bool):
        return dict.fromkeys(MODELS, value)
    return {m: bool(value[m]) for m in MODELS}


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
