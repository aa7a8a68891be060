"""The encoder contract and the model registry: every family loads an Encoder that meets it."""

from __future__ import annotations

import numpy as np
import pytest

from virnuc_core.engine.encoder import Encoder
from virnuc_core.engine.packing import make_batch
from virnuc_core.registry import FAMILIES, family, load_encoder
from virnuc_core.settings import WorkflowSettings

CONFIG = {"samples": {"s": "x"}, "chunk_length": 500, "models": {"dnabert": "tiny", "esm": "tiny"}}
SEQS = {"dnabert": ["ATGAAACCCGGGTTT", "ACGT" * 30], "esm": ["MKPGF", "MKV" * 20]}


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_every_family_loads_an_encoder_that_meets_the_contract(model):
    settings = WorkflowSettings.from_config(CONFIG).embed(model)
    encoder = load_encoder(settings, "cpu")
    assert isinstance(encoder, Encoder) and encoder.name == model
    tokens = encoder.tokenize(SEQS[model])
    assert all(t.dtype == np.int64 and t.ndim == 1 for t in tokens)
    fast = encoder.embed_packed(make_batch(tokens)).numpy()
    ref = encoder.reference_embed(SEQS[model])
    assert fast.shape == ref.shape == (2, encoder.dim) and fast.dtype == np.float32
    cos = (fast * ref).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999  # the fast path is the reference path, packed
    described = encoder.describe()
    for key in ("model", "precision", "attention_backend", "weights_sha256"):
        assert described.get(key) not in (None, ""), key  # both models record their weights
    assert described["precision"] == "fp32"  # decided once at load: CPU jobs run fp32


def test_the_registry_says_what_each_model_reads():
    rows = np.zeros(2, [("nt_offset", "<i8"), ("nt_length", "<i4"), ("aa_offset", "<i8"),
                        ("aa_length", "<i4")])  # fmt: skip
    rows["nt_offset"], rows["nt_length"], rows["aa_offset"], rows["aa_length"] = 1, 2, 3, 4
    assert [x.tolist() for x in family("dnabert").spans(rows)] == [[1, 1], [2, 2]]
    assert [x.tolist() for x in family("esm").spans(rows)] == [[3, 3], [4, 4]]
    assert family("esm").sequences == "proteins.faa" and family("dnabert").sequences == "frames.fa"
    assert family("esm").token_cost(np.array([5, 2000])).tolist() == [7, 1026]  # BOS, EOS, 1024
    assert family("esm").architecture("/m/esm2_t36_3B_UR50D.pt") == "ESM-2 3B"
    assert family("esm").architecture("tiny") is None
    with pytest.raises(ValueError, match="unknown model 'x'"):
        family("x")


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_the_registry_resolves_what_the_engine_runs_on_the_cpu(model):
    """GPU settings on the CPU: the registry gives the engine fp32, the per-sequence attention
    and no compiling (the engine itself takes only resolved values), and the outputs'
    attributes say so."""
    config = {"samples": {"s": "x"}, "chunk_length": 300, "models": {model: "tiny"},
              "precision": "bf16", "compile": True, "attention_backend": "auto"}  # fmt: skip
    enc = load_encoder(WorkflowSettings.from_config(config).embed(model), "cpu")
    d = enc.describe()
    assert (d["precision"], d["attention_backend"], d["compiled"]) == ("fp32", "loop", 0)
    assert str(enc.embed_packed(make_batch(enc.tokenize(SEQS[model]))).dtype) == "torch.float32"
