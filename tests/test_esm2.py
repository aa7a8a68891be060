"""ESM-2 packed engine vs fair-esm's own forward (the v1 reference), on tiny random models."""

from __future__ import annotations

import argparse
import hashlib
import os
import zipfile

import numpy as np
import pytest
import torch

esm = pytest.importorskip("esm")

from tests.model_fixtures import offline, save_fair_checkpoint  # noqa: E402
from virnuc_core.engine.model_files import ModelFilesError  # noqa: E402
from virnuc_core.engine.models import esm2  # noqa: E402
from virnuc_core.engine.models.building import RANDOM_INITS, no_weight_init  # noqa: E402
from virnuc_core.engine.models.esm2_load import random_model  # noqa: E402
from virnuc_core.engine.packing import make_batch  # noqa: E402
from virnuc_core.util.corrupt import UnreadableModelFileError  # noqa: E402

AMINO = list("LAGVSERTIDPKQNFYMHWC")
UNUSUAL = list("XBZUO")


def random_proteins(rng, lengths, unusual=0.02, masks=0.0):
    out = []
    for n in lengths:
        toks = rng.choice(AMINO, size=n).astype(object)
        toks[rng.random(n) < unusual] = rng.choice(UNUSUAL)
        toks[rng.random(n) < masks] = "<mask>"
        out.append("".join(toks))
    return out


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _cases():
    rng = np.random.default_rng(1234)
    edge = [1, 2, 3, 1022, 1023, 1024, 1025, 1026, 1100]
    return {
        "one_residue": random_proteins(rng, [1]),
        "300_short": random_proteins(rng, rng.integers(1, 40, 300)),
        "edges_1_to_1100": random_proteins(rng, edge + list(rng.integers(1, 1101, 6))),
        "mixed_with_masks": random_proteins(rng, rng.integers(1, 400, 60), masks=0.1),
    }


CASES = _cases()


@pytest.fixture(scope="module")
def tiny():
    return esm2.load("tiny")


@pytest.fixture(scope="module")
def reference(tiny):
    return {name: tiny.reference_embed(seqs) for name, seqs in CASES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["loop", "padded"])
def test_packed_matches_fair_esm(tiny, reference, case, backend):
    enc = tiny if backend == "loop" else esm2.load("tiny", backend=backend)
    assert enc.backend == ("loop" if backend == "auto" else backend)
    got = enc.embed(CASES[case], token_budget=4096)
    assert got.shape == (len(CASES[case]), enc.dim) and got.dtype == np.float32
    assert cosines(got, reference[case]).min() >= 0.99999
    np.testing.assert_allclose(got, reference[case], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer", [0, 1])
def test_repr_layer_override_matches_fair_representations(layer):
    enc = esm2.load("tiny", repr_layer=layer)
    assert enc.repr_layer == layer and enc.num_layers == 2
    seqs = CASES["mixed_with_masks"][:25] + CASES["edges_1_to_1100"][:4]
    got = enc.embed(seqs, token_budget=2048)
    assert cosines(got, enc.reference_embed(seqs)).min() >= 0.99999
    # fair-esm by hand, one protein at a time: representations[layer][1 : L + 1].mean(0)
    model, alphabet = random_model()
    convert = alphabet.get_batch_converter(truncation_seq_length=1024)
    for i in (0, 26, 28):
        _, _, toks = convert([("p", seqs[i])])
        with torch.no_grad():
            rep = model(toks, repr_layers=[layer])["representations"][layer][0]
        want = rep[1 : toks.shape[1] - 1].mean(0).numpy()
        assert cosines(got[i : i + 1], want[None])[0] >= 0.99999


def test_last_layer_has_final_layer_norm():
    last, before = esm2.load("tiny"), esm2.load("tiny", repr_layer=1)
    assert last.repr_layer == 2  # read from the model, not hard-coded
    seqs = CASES["mixed_with_masks"][:5]
    batch = make_batch(last.tokenize(seqs))
    h = last.model(batch, 2, last.backend, last.ops)
    normed = (h - h.mean(-1, keepdim=True)) / h.std(-1, unbiased=False, keepdim=True)
    ln = last.model.emb_layer_norm_after
    torch.testing.assert_close(h, normed * ln.weight + ln.bias, rtol=1e-3, atol=1e-3)
    assert not np.allclose(last.embed(seqs), before.embed(seqs))


def test_truncation_length_is_a_parameter():
    enc = esm2.load("tiny", truncation=50)
    seqs = random_proteins(np.random.default_rng(5), [10, 49, 50, 51, 300])
    toks = enc.tokenize(seqs)
    assert [len(t) for t in toks] == [12, 51, 52, 52, 52]
    got = enc.embed(seqs)
    assert cosines(got, enc.reference_embed(seqs)).min() >= 0.99999
    # the kept residues alone give the same embedding
    np.testing.assert_allclose(got[4], enc.embed([seqs[4][:50]])[0], rtol=1e-5, atol=1e-6)


def test_tokenize_matches_fair_esm_alphabet(tiny):
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    convert = alphabet.get_batch_converter(truncation_seq_length=1024)
    seqs = [
        "XBZUO",
        "MKV<mask>LLX",
        "".join(AMINO),
        "A C D",
        "<mask>",
        "",
        "O" * 1100,
        "MK<mask>" + "A" * 1030,
        ".-X",
    ]
    for seq, ours in zip(seqs, tiny.tokenize(seqs), strict=True):
        _, _, toks = convert([("p", seq)])
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours, toks[0].numpy())
    with pytest.raises(ValueError, match="not in the ESM-2 alphabet"):
        tiny.tokenize(["MKJ"])
    with pytest.raises(ValueError, match="not in the ESM-2 alphabet"):
        tiny.tokenize(["MK*"])


def test_empty_protein_gives_zeros_not_nan(tiny):
    seqs = ["", "MKV"]
    got = tiny.embed(seqs)
    assert np.all(got[0] == 0) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, tiny.reference_embed(seqs), rtol=1e-4, atol=1e-5)


def test_embed_packed_contract(tiny):
    seqs = CASES["mixed_with_masks"][:7]
    out = tiny.embed_packed(make_batch(tiny.tokenize(seqs)))
    assert out.shape == (7, tiny.dim) and out.dtype == torch.float32
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    # the engine runs what it is given, resolved (registry.load_encoder: fp32 on the CPU)
    with pytest.raises(ValueError, match="resolved by attention.choose_backend"):
        esm2.load("tiny", backend="auto")
    d = tiny.describe()
    assert d["repr_layer"] == 2 and d["dim"] == 64 and d["truncation"] == 1024
    assert all(isinstance(v, str | int | float) for v in d.values())
    with pytest.raises(ValueError):
        esm2.load("tiny", repr_layer=3)
    with pytest.raises(ValueError):
        esm2.load("tiny", precision="int4")
    with pytest.raises(ValueError, match="esm2_"):
        esm2.load("not_a_model_name")


# -- checkpoints in fair-esm's published format ---------------------------------------------------
@pytest.mark.parametrize("with_regression", [True, False])
def test_local_checkpoint_loads_like_fair_esm(tmp_path, with_regression):
    model, _ = random_model(seed=7, num_layers=3, embed_dim=32, attention_heads=2)
    path = tmp_path / "esm2_t3_test_UR50D.pt"
    save_fair_checkpoint(model, path, with_regression)
    enc = esm2.load(str(path))
    assert (enc.num_layers, enc.dim, enc.heads, enc.repr_layer) == (3, 32, 2, 3)
    seqs = CASES["edges_1_to_1100"][:6] + CASES["mixed_with_masks"][:10]
    got = enc.embed(seqs)
    # the reference of a path-loaded encoder is rebuilt from the file; also compare with the
    # model that wrote it, run through an encoder that wraps it directly
    want = esm2.ESMEncoder(model, "direct").reference_embed(seqs)
    assert cosines(got, want).min() >= 0.99999
    np.testing.assert_allclose(enc.reference_embed(seqs), want, rtol=1e-6, atol=1e-6)


def test_legacy_format_checkpoint_loads_the_same_weights(tmp_path):
    """Files in torch's legacy (non-zip) format cannot be mapped; they are read whole."""
    model, _ = random_model(seed=8, num_layers=2, embed_dim=32, attention_heads=2)
    path = tmp_path / "esm2_t2_test_UR50D.pt"
    save_fair_checkpoint(model, path, with_regression=False)
    data = torch.load(path, weights_only=False)
    torch.save(data, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    loaded = esm2.load(str(path)).reference_model()
    for key, value in model.state_dict().items():
        if not key.startswith("contact_head"):  # not in the file (no regression file written)
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_building_from_a_checkpoint_runs_no_random_initialiser(tmp_path, monkeypatch):
    """fair-esm's attention layers call torch.nn.init themselves (xavier_uniform_ on every
    projection, ~5 s for ESM-2 3B): none runs while the file's weights are loaded; every weight
    is the file's, and the initialisers work again afterwards."""
    model, _ = random_model(seed=9, num_layers=2, embed_dim=32, attention_heads=2)
    path = tmp_path / "esm2_t2_test_UR50D.pt"
    save_fair_checkpoint(model, path, with_regression=True)
    calls = []

    def spy(real, name):
        return lambda *a, **k: calls.append(name) or real(*a, **k)

    for name in ("xavier_uniform_", "xavier_normal_"):  # what fair-esm's own code calls
        monkeypatch.setattr(torch.nn.init, name, spy(getattr(torch.nn.init, name), name))
    before = {name: getattr(torch.nn.init, name) for name in RANDOM_INITS}
    loaded = esm2.load(str(path)).reference_model()
    assert calls == []
    torch.nn.init.xavier_uniform_(torch.empty(2, 2))
    assert calls == ["xavier_uniform_"]  # restored on leaving
    assert {name: getattr(torch.nn.init, name) for name in RANDOM_INITS} == before
    with pytest.raises(RuntimeError), no_weight_init():  # restored after a failed build too
        raise RuntimeError("a checkpoint that does not fit")
    assert {name: getattr(torch.nn.init, name) for name in RANDOM_INITS} == before
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)


UNCOMPILED_JOB = """
import sys
from virnuc_core.registry import load_encoder
from virnuc_core.settings import WorkflowSettings
config = {"samples": {"s": "x"}, "chunk_length": 500, "models": {"dnabert": "tiny", "esm": "tiny"}}
encoder = load_encoder(WorkflowSettings.from_config(config).embed("esm"), "cpu",
                       keep_reference=True)
encoder.reference_embed(["MKV"])
encoder.ready_fast_path()
encoder.release_reference()
encoder.embed(["MKVL", "MA"])
print("torch._dynamo" in sys.modules)
"""


def test_an_esm2_job_never_imports_torch_dynamo():
    """torch.compile, and torch.device("meta") as a context, import torch._dynamo: 2 s of the
    job's start on an H200 host, for nothing: ESM-2's layers are never compiled."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", UNCOMPILED_JOB], cwd=root, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch esm2_pwned",))


def test_checkpoint_with_disallowed_global_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, _ = random_model()
    path = tmp_path / "esm2_t2_evil.pt"
    save_fair_checkpoint(model, path, with_regression=False)
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    data["extra"] = _Evil()
    torch.save(data, path)
    with pytest.raises(ValueError, match="refusing to load"):
        esm2.load(str(path))
    assert not (tmp_path / "esm2_pwned").exists()


def test_refused_global_message_names_it_and_never_suggests_unsafe_loading(tmp_path):
    model, _ = random_model()
    path = tmp_path / "esm2_t2_evil.pt"
    save_fair_checkpoint(model, path, with_regression=False)
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    data["extra"] = _Evil()
    torch.save(data, path)
    with pytest.raises(ValueError) as err:
        esm2.load(str(path))
    msg = str(err.value)
    assert str(path) in msg and "system" in msg  # the refused global, posix.system or os.system
    assert "corrupt" not in msg and "weights_only" not in msg


def _corrupt(path, how):
    raw = path.read_bytes()
    if how == "random":
        path.write_bytes(np.random.default_rng(5).bytes(len(raw)))
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:  # "legacy-truncated": a legacy-format checkpoint cut in its storage data
        data = torch.load(path, weights_only=False)
        torch.save(data, path, _use_new_zipfile_serialization=False)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) - 100])


@pytest.mark.parametrize("how", ["random", "truncated", "legacy-truncated"])
@pytest.mark.parametrize("which", ["checkpoint", "regression"])
def test_corrupt_checkpoint_says_corrupt_and_names_the_file(tmp_path, how, which):
    model, _ = random_model(seed=3, num_layers=2, embed_dim=32, attention_heads=2)
    path = tmp_path / "esm2_t2_test_UR50D.pt"
    save_fair_checkpoint(model, path)
    bad = path if which == "checkpoint" else tmp_path / "esm2_t2_test_UR50D-contact-regression.pt"
    _corrupt(bad, how)
    with pytest.raises(UnreadableModelFileError) as err:
        esm2.load(str(path))
    msg = str(err.value)
    assert str(bad) in msg and "corrupt or truncated" in msg and "not a readable" in msg
    assert "weights_only" not in msg and "other than tensors" not in msg
    assert "virnuc-fetch-models" in msg  # what to do


def test_describe_has_the_sha256_of_the_checkpoint_file(tmp_path):
    model, _ = random_model(seed=4, num_layers=2, embed_dim=32, attention_heads=2)
    path = tmp_path / "esm2_t2_test_UR50D.pt"
    save_fair_checkpoint(model, path)
    d = esm2.load(str(path)).describe()
    assert d["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d["weights_sha256_of"] == path.name
    tiny = esm2.load("tiny").describe()
    assert len(tiny["weights_sha256"]) == 64 and tiny["weights_sha256_of"].startswith("tensors")
    assert tiny["weights_sha256"] == esm2.load("tiny").describe()["weights_sha256"]
    direct = esm2.ESMEncoder(model, "direct").describe()
    assert len(direct["weights_sha256"]) == 64 and direct["weights_sha256"] != d["weights_sha256"]


def test_hub_name_is_refused_with_the_fetch_command(monkeypatch):
    offline(monkeypatch)
    with pytest.raises(ModelFilesError, match=r"never download.*virnuc-fetch-models"):
        esm2.load("esm2_t36_3B_UR50D")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        esm2.load(str(tmp_path / "esm2_t6_missing.pt"))


# -- GPU (skipped without one) ------------------------------------------------------------------
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("backend", ["varlen", "triton", "padded", "loop"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_reduced_precision_close_to_reference(backend, precision):
    enc = esm2.load("tiny", device="cuda", precision=precision, backend=backend)
    seqs = CASES["mixed_with_masks"] + CASES["edges_1_to_1100"]
    cos = cosines(enc.embed(seqs), enc.reference_embed(seqs))
    assert cos.mean() >= 0.999 and cos.min() >= 0.99


@pytest.mark.gpu
@gpu
def test_gpu_embed_packed_never_syncs_the_host():
    enc = esm2.load("tiny", device="cuda", precision="bf16", backend="varlen")
    batch = make_batch(enc.tokenize(CASES["mixed_with_masks"])).to("cuda")
    enc.embed_packed(batch)  # warm-up (lazy inits may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        enc.embed_packed(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_validation_reads_the_checkpoint_once_and_embed_jobs_do_not_keep_it(tmp_path, monkeypatch):
    """A validation job (the reference path only) builds the fair-esm model from the file once;
    an embed job drops it after packing and would rebuild it only for the reference path."""
    from virnuc_core.engine.models import esm2_load
    from virnuc_core.registry import load_encoder
    from virnuc_core.settings import WorkflowSettings

    model, _ = random_model(seed=3, num_layers=2, embed_dim=32, attention_heads=2)
    path = tmp_path / "esm2_t2_test_UR50D.pt"
    save_fair_checkpoint(model, path, with_regression=False)
    config = {"samples": {"s": "x"}, "chunk_length": 300, "models": {"esm": str(path)}}
    settings = WorkflowSettings.from_config(config).embed("esm")
    reads = []
    real = esm2_load.safe_load
    monkeypatch.setattr(esm2_load, "safe_load", lambda p, **k: reads.append(str(p)) or real(p, **k))
    seqs = ["MKV", "ACDEFGHIKLMNPQRSTVWY" * 3]
    want = esm2.ESMEncoder(model, "direct").reference_embed(seqs)

    validation = load_encoder(settings, "cpu", reference=True)
    np.testing.assert_allclose(validation.reference_embed(seqs), want, rtol=1e-6, atol=1e-6)
    assert reads == [str(path)]
    assert validation._model is None  # the fast path's packed copy was never built
    fast = validation.embed(seqs)  # built on first use, from the same weights
    assert cosines(fast, want).min() >= 0.99999 and reads == [str(path)]

    reads.clear()
    job = load_encoder(settings, "cpu")
    assert job._reference is None  # the fp32 fair-esm model is not held through the job
    np.testing.assert_allclose(job.reference_embed(seqs), want, rtol=1e-6, atol=1e-6)
    assert reads == [str(path), str(path)]
