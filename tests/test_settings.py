"""Config -> per-job settings: per-model compile, its mode, dedupe and reader processes."""

from __future__ import annotations

import pytest
import yaml

from tests.workflow_helpers import REPO
from virnuc_core.settings import EmbedSettings, WorkflowSettings

BASE = {"chunk_length": 500, "shards": 2, "models": {"dnabert": "tiny", "esm": "tiny"}}


def schema_defaults() -> dict:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    return {k: v["default"] for k, v in schema["properties"].items() if "default" in v}


def test_defaults_compile_esm_only_and_match_the_schema():
    defaults = schema_defaults()
    s = WorkflowSettings.from_config(BASE)
    assert s.embed("esm").compile is True and s.embed("dnabert").compile is False
    assert dict(s.compile) == defaults["compile"]
    assert s.compile_mode == defaults["compile_mode"] == "default"
    assert s.dedupe is defaults["dedupe"] is True
    assert s.reader_workers == defaults["reader_workers"] == 4


def test_config_values_reach_each_job():
    config = {**BASE, "compile": {"dnabert": True, "esm": False}}
    config["compile_mode"] = "max-autotune-no-cudagraphs"
    s = WorkflowSettings.from_config({**config, "dedupe": False, "reader_workers": 1})
    dna, esm = s.embed("dnabert"), s.embed("esm")
    assert (dna.compile, esm.compile) == (True, False)
    assert dna.compile_mode == esm.compile_mode == "max-autotune-no-cudagraphs"
    assert EmbedSettings.from_json(dna.to_json()) == dna
    assert (s.dedupe, s.reader_workers) == (False, 1)


def test_one_boolean_compiles_both_and_modes_are_checked():
    s = WorkflowSettings.from_config({**BASE, "compile": True})
    assert s.embed("dnabert").compile is s.embed("esm").compile is True
    with pytest.raises(ValueError, match="compile_mode"):
        EmbedSettings(model="esm", model_spec="tiny", compile_mode="fastest")
