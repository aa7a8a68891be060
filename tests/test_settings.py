"""Config -> per-job settings: defaults come from the schema alone and reach every job."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from tests.workflow_helpers import REPO, run_snakemake, write_config
from virnuc_core.settings import EmbedSettings, WorkflowSettings, with_defaults

BASE = {"samples": {"s": "r.fa"}, "chunk_length": 500, "models": {"dnabert": "tiny", "esm": "tiny"}}
# Embed-job fields and the config key each comes from (per-model mappings indexed by model).
EMBED_KEYS = {
    "precision": "precision",
    "token_budget": "token_budget",
    "attention_backend": "attention_backend",
    "compile": "compile",
    "checkpoint_every": "checkpoint_every",
    "checkpoint_seconds": "checkpoint_seconds",
    "progress_seconds": "progress_seconds",
    "keep_stale": "keep_stale",
}


def schema_defaults() -> dict:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    return {k: v["default"] for k, v in schema["properties"].items() if "default" in v}


def test_every_schema_default_reaches_every_job():
    defaults = schema_defaults()
    s = WorkflowSettings.from_config(BASE)
    for model in ("dnabert", "esm"):
        job = s.embed(model)
        for field, key in EMBED_KEYS.items():
            want = defaults[key][model] if isinstance(defaults[key], dict) else defaults[key]
            assert getattr(job, field) == want, (model, field)
        assert job.repr_layer == (defaults["esm_repr_layer"] if model == "esm" else None)
    assert dataclasses.asdict(s.validate) == defaults["validate"]
    for key in ("shards", "dedupe", "reader_workers", "embed_retries", "classifier",
                "viral_fasta", "models_dir", "dnabert_revision", "min_score"):  # fmt: skip
        assert getattr(s, key) == defaults[key], key
    # config/config.yaml restates no default: every key it sets is one a run must set
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert set(config) == {"samples", "chunk_length", "classifier"}
    assert WorkflowSettings.from_config({"samples": {"s": "x"}, "chunk_length": 300}).models == {
        "dnabert": "zhihan1996/DNABERT-S", "esm": "esm2_t36_3B_UR50D",
    }  # fmt: skip


def test_partial_nested_values_keep_the_other_defaults():
    c = with_defaults({**BASE, "validate": {"n": 7}, "token_budget": {"esm": 1024}})
    assert c["validate"] == {**schema_defaults()["validate"], "n": 7}
    assert c["token_budget"] == {"dnabert": 65536, "esm": 1024}


def test_config_values_reach_each_job():
    config = {**BASE, "compile": False, "checkpoint_every": 7}
    s = WorkflowSettings.from_config({**config, "dedupe": False, "reader_workers": 1})
    dna, esm = s.embed("dnabert"), s.embed("esm")
    assert dna.compile is esm.compile is False
    assert dna.checkpoint_every == esm.checkpoint_every == 7
    assert EmbedSettings.from_json(dna.to_json()) == dna
    assert (s.dedupe, s.reader_workers) == (False, 1)
    assert s.embed("esm", attempt=3).token_budget == 65536 // 4  # halved on each retry


def test_sharing_a_gpu_is_per_model_and_does_not_change_what_resumes():
    s = WorkflowSettings.from_config(BASE)
    assert s.share_gpu == schema_defaults()["share_gpu"] == {"dnabert": True, "esm": False}
    assert WorkflowSettings.from_config({**BASE, "share_gpu": True}).share_gpu["esm"] is True
    partial = WorkflowSettings.from_config({**BASE, "share_gpu": {"esm": True}})
    assert partial.share_gpu == {"dnabert": True, "esm": True}  # dnabert: the default
    alone = WorkflowSettings.from_config({**BASE, "share_gpu": False})
    # where a job runs changes no embedding: it is not among a job's settings (its params: a
    # change there would make Snakemake embed every shard again) nor in what resumes
    assert alone.embed("dnabert") == s.embed("dnabert")
    assert "share_gpu" not in s.embed("dnabert").as_dict()


@pytest.mark.parametrize("value, dnabert", [
    ({"dnabert": False, "esm": True}, False), ({"dnabert": True, "esm": False}, True),
    ({"esm": True}, True), (False, False), (True, True),
])  # fmt: skip
def test_compile_is_read_per_model(value, dnabert):
    """compile per model or one boolean (a model left out takes the default, true for
    DNABERT-S); ESM-2's loader never compiles, whatever its value (registry._load_esm)."""
    s = WorkflowSettings.from_config({**BASE, "compile": value})
    assert s.embed("dnabert").compile is dnabert


@pytest.mark.parametrize("key, value", [
    ("fused_kernels", False), ("gelu_in_matmul", True), ("compile_mode", "default"),
])  # fmt: skip
def test_keys_of_removed_levers_are_refused_saying_why(key, value):
    with pytest.raises(ValueError) as e:
        WorkflowSettings.from_config({**BASE, key: value})
    msg = str(e.value)
    assert repr(key) in msg and "no longer exist" in msg and "Delete them" in msg
    # and the schema (Snakemake's validate, before any of this) refuses them as unknown keys
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert key not in schema["properties"] and schema["additionalProperties"] is False


def test_precision_values_are_checked():
    s = WorkflowSettings.from_config(BASE)
    for bad in ("int8", "fp8"):  # fp8 left the library
        with pytest.raises(ValueError, match="precision"):
            dataclasses.replace(s.embed("esm"), precision=bad)


def test_the_embed_rule_passes_the_token_budget_once():
    """The rule's params carry every setting but the budget; its resource (halved per retry)
    is the budget's one channel, joined without a second value to override."""
    s = WorkflowSettings.from_config(BASE)
    params = s.embed("esm").rule_params()
    assert "token_budget" not in params
    job = EmbedSettings(**params, token_budget=s.embed("esm", attempt=2).token_budget)
    assert job == dataclasses.replace(s.embed("esm"), token_budget=65536 // 2)


def test_the_snakefile_starts_without_importing_torch():
    """Every run's DAG waits for the Snakefile's imports (common.smk's): torch alone took
    seconds there, on machines whose torch has no compiled bytecode longer still."""
    import re
    import subprocess
    import sys

    common = (REPO / "workflow/rules/common.smk").read_text()
    modules = re.findall(r"^from (virnuc_core[\w.]*) import", common, re.M)
    modules += [
        f"virnuc_core.{m}" for m in re.findall(r"^from virnuc_core import (\w+)", common, re.M)
    ]
    assert (
        "virnuc_core.settings" in modules
        and "virnuc_core.engine.models.classifier_check" in modules
    )
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out


@pytest.mark.parametrize("value, ok", [
    (None, True), (0, True), (0.9, True), (1, True),
    (1.5, False), (-0.1, False), ("0.9", False), (True, False),
])  # fmt: skip
def test_min_score_is_null_or_a_number_in_0_1(value, ok):
    import jsonschema

    from virnuc_core.settings import schema

    config = {**BASE, "min_score": value}
    if ok:
        jsonschema.validate(config, schema())
        assert WorkflowSettings.from_config(config).min_score == value
    else:
        with pytest.raises(jsonschema.ValidationError, match="min_score|0.9|True"):
            jsonschema.validate(config, schema())


@pytest.mark.workflow
def test_a_dry_run_refuses_a_removed_key_saying_why(tmp_path):
    """Before any job, and before the schema's generic 'Additional properties' error."""
    write_config(tmp_path, fused_kernels=True)
    proc = run_snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'fused_kernels'" in out and "no longer exist" in out and "Delete them" in out
    assert "Additional properties" not in out
