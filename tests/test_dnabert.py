"""DNABERT-S: loading from a Hugging Face-layout folder, tokenizer, packed path vs reference."""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch

from tests.model_fixtures import offline
from virnuc_core.engine.attention import alibi_slopes
from virnuc_core.engine.model_files import ModelFilesError
from virnuc_core.engine.models import dnabert
from virnuc_core.engine.models.dnabert_load import DnaTokenizer, expected_shapes, resolve_folder
from virnuc_core.engine.models.dnabert_tiny import (
    FULL_CONFIG,
    TINY_CONFIG,
    random_dna,
    random_state_dict,
    write_folder,
)
from virnuc_core.engine.packing import make_batch
from virnuc_core.util.corrupt import UnreadableModelFileError

FORMATS = [("safetensors", "model.safetensors"), ("bin", "pytorch_model.bin")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("dnabert_tiny"))


@pytest.fixture(scope="module")
def enc(folder):
    return dnabert.load(str(folder))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def token_mix(enc, seed: int, long: int, short: int) -> list[np.ndarray]:
    """Tokenised random DNA: ``long`` sequences of 512+ tokens, ``short`` of 2-100 tokens, and
    hand-made 1-token and [CLS][SEP] sequences (via ids, as no string tokenises to 1 token)."""
    rng = np.random.default_rng(seed)
    seqs = random_dna(rng, long, 1900, 2300) + random_dna(rng, short, 0, 300)
    toks = enc.tokenize(seqs)
    assert all(len(t) >= 512 for t in toks[:long])
    cls_, sep = enc.tokenizer.cls_id, enc.tokenizer.sep_id
    toks += [np.array([cls_]), np.array([7]), np.array([cls_, sep])]
    order = rng.permutation(len(toks))
    return [toks[i] for i in order]


@pytest.mark.parametrize("backend", ["loop", "padded"])
def test_packed_matches_reference(enc, backend):
    toks = token_mix(enc, seed=1, long=3, short=25)
    enc.backend = backend  # bypass choose_backend: on CPU it resolves everything to 'loop'
    try:
        out = enc.embed_packed(make_batch(toks))
    finally:
        enc.backend = "loop"
    assert out.dtype == torch.float32 and out.shape == (len(toks), enc.dim)
    cos = cosines(out.numpy(), enc.reference_embed_ids(toks))
    assert cos.min() >= 0.99999, (backend, cos.min())


def test_reference_embed_is_mean_of_all_tokens(enc):
    seqs = random_dna(np.random.default_rng(3), 3, 50, 400)
    ref = enc.reference_embed(seqs)
    toks = enc.tokenize(seqs)
    for i, ids in enumerate(toks):
        hidden = dnabert.reference_hidden(enc._reference_weights(), enc.cfg, torch.as_tensor(ids))
        np.testing.assert_allclose(ref[i], hidden.mean(0).numpy(), rtol=1e-6, atol=1e-6)
    # context independence: a sequence embeds the same alone and packed with others
    alone = enc.embed_packed(make_batch(toks[:1])).numpy()
    packed = enc.embed_packed(make_batch(toks)).numpy()
    np.testing.assert_allclose(alone[0], packed[0], rtol=1e-5, atol=1e-5)


def test_alibi_slopes_12_heads():
    want = [2.0**-k for k in range(1, 9)] + [2.0**-k for k in (0.5, 1.5, 2.5, 3.5)]
    np.testing.assert_allclose(dnabert._ref_slopes(12), want, rtol=1e-12)
    np.testing.assert_allclose(alibi_slopes(12).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(dnabert._ref_slopes(8), [2.0**-k for k in range(1, 9)])


def test_tokenizer_matches_transformers(folder, enc):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    seqs = random_dna(np.random.default_rng(4), 40, 0, 1500) + ["ACGTNNACGT", "acgt", "A"]
    ours = enc.tokenize(seqs)
    for s, ids in zip(seqs, ours, strict=True):
        assert ids.dtype == np.int64
        theirs = hf(s, return_tensors="pt")["input_ids"][0].numpy()
        np.testing.assert_array_equal(ids, theirs)
        assert ids[0] == enc.tokenizer.cls_id and ids[-1] == enc.tokenizer.sep_id


def test_tokenizer_without_post_processor_adds_specials(folder, tmp_path):
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    bare = DnaTokenizer.from_file(tmp_path / "tokenizer.json")
    full = DnaTokenizer.from_file(folder / "tokenizer.json")
    seqs = ["ACGTACGTTTGA", "G"]
    for a, b in zip(bare(seqs), full(seqs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiny_spec_equals_tiny_folder(enc):
    tiny = dnabert.load("tiny")
    toks = enc.tokenize(random_dna(np.random.default_rng(5), 4, 10, 300))
    assert [t.tolist() for t in tiny.tokenize(["ACGTTGCA"])] == [
        t.tolist() for t in enc.tokenize(["ACGTTGCA"])
    ]
    b = make_batch(toks)
    np.testing.assert_array_equal(tiny.embed_packed(b).numpy(), enc.embed_packed(b).numpy())
    # the same tensors: tiny's checksum is of its tensors, the folder's of its file
    assert tiny.describe()["weights_sha256_of"].startswith("tensors")
    assert enc.describe()["weights_sha256_of"] == "model.safetensors"


@pytest.mark.parametrize(
    "fmt,name", [("safetensors", "model.safetensors"), ("bin", "pytorch_model.bin")]
)
def test_describe_has_the_sha256_of_the_weights_file(tmp_path, fmt, name):
    folder = write_folder(tmp_path / "m", fmt=fmt)
    d = dnabert.load(str(folder)).describe()
    assert d["weights_sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert d["weights_sha256_of"] == name


def test_sharded_weights_checksum_covers_every_shard(tmp_path):
    from safetensors.torch import save_file

    folder = write_folder(tmp_path / "m")
    state = random_state_dict(TINY_CONFIG, seed=0)
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(folder / name))
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model.safetensors").unlink()
    d = dnabert.load(str(folder)).describe()
    lines = "".join(
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in sorted(shards)
    )
    assert d["weights_sha256"] == hashlib.sha256(lines.encode()).hexdigest()  # as sha256sum lists
    assert d["weights_sha256_of"] == ", ".join(sorted(shards))


def test_tiny_checksum_covers_every_tensor_fully():
    base = dnabert.load("tiny").describe()["weights_sha256"]
    assert len(base) == 64 and base == dnabert.load("tiny").describe()["weights_sha256"]
    state = random_state_dict(TINY_CONFIG, seed=0)
    key = "encoder.layer.1.mlp.wo.weight"
    state[key].view(-1)[-1] += 1.0  # the last element: past any prefix a short hash would read
    changed = dnabert.DnabertEncoder(
        "x", TINY_CONFIG, state, dnabert.load("tiny").tokenizer, torch.device("cpu"), "fp32", "loop"
    )
    assert changed.describe()["weights_sha256"] != base


def test_contract_attributes(enc):
    assert enc.name == "dnabert" and enc.dim == TINY_CONFIG.hidden_size
    assert enc.device == torch.device("cpu") and enc.dtype == torch.float32
    assert enc.backend == "loop"
    d = enc.describe()
    assert all(isinstance(v, str | int | float) for v in d.values())
    assert d["precision"] == "fp32" and d["dim"] == enc.dim
    # the engine takes resolved values only (registry.load_encoder resolves them)
    with pytest.raises(ValueError, match="resolved"):
        dnabert.load("tiny", backend="auto")
    with pytest.raises(ValueError, match="no ALiBi"):
        dnabert.load("tiny", backend="varlen")


def test_bin_with_prefix_and_extra_keys_loads(tmp_path, enc):
    state = random_state_dict(TINY_CONFIG, seed=0)
    h = TINY_CONFIG.hidden_size
    state["cls.predictions.transform.dense.weight"] = torch.zeros(h, h)
    state["cls.predictions.decoder.bias"] = torch.zeros(TINY_CONFIG.vocab_size)
    state["pooler.dense.weight"] = torch.zeros(h, h)
    folder = write_folder(tmp_path / "m", state=state, fmt="bin", prefix="bert.")
    other = dnabert.load(str(folder))
    b = make_batch(enc.tokenize(["ACGTACGGATTACA", "TTGACCA"]))
    np.testing.assert_array_equal(other.embed_packed(b).numpy(), enc.embed_packed(b).numpy())


def test_wrong_key_names_fail_clearly(tmp_path):
    state = random_state_dict(TINY_CONFIG, seed=0)
    state["encoder.layer.1.attention.self.qkv.weight"] = state.pop(
        "encoder.layer.1.attention.self.Wqkv.weight"
    )
    folder = write_folder(tmp_path / "m", state=state)
    with pytest.raises(ValueError) as err:
        dnabert.load(str(folder))
    msg = str(err.value)
    assert "missing keys" in msg and "encoder.layer.1.attention.self.Wqkv.weight" in msg
    assert "encoder.layer.1.attention.self.qkv.weight" in msg  # named as unexpected


def test_wrong_shapes_fail_clearly(tmp_path):
    state = random_state_dict(TINY_CONFIG, seed=0)
    state["encoder.layer.0.mlp.gated_layers.weight"] = torch.zeros(
        TINY_CONFIG.intermediate_size, 96
    )
    folder = write_folder(tmp_path / "m", state=state)
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.mlp\.gated_layers\.weight: expected"):
        dnabert.load(str(folder))


def test_incomplete_folder_fails(tmp_path, folder):
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        dnabert.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        dnabert.load(str(tmp_path / "nope"))


def test_hub_name_is_refused_with_the_fetch_command(monkeypatch):
    offline(monkeypatch)  # runs never download
    with pytest.raises(ModelFilesError, match=r"never download.*virnuc-fetch-models"):
        resolve_folder("zhihan1996/DNABERT-S")
    with pytest.raises(ModelFilesError, match="virnuc-fetch-models"):
        dnabert.load("zhihan1996/DNABERT-S")


def _damage(path, how):
    raw = path.read_bytes()
    if how == "random":
        path.write_bytes(np.random.default_rng(9).bytes(len(raw)))
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:  # "empty"
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["random", "truncated", "empty"])
@pytest.mark.parametrize(
    "fmt,name", [("bin", "pytorch_model.bin"), ("safetensors", "model.safetensors")]
)
def test_corrupt_weights_say_corrupt_and_name_the_file(tmp_path, how, fmt, name):
    folder = write_folder(tmp_path / "m", fmt=fmt)
    _damage(folder / name, how)
    with pytest.raises(UnreadableModelFileError) as err:
        dnabert.load(str(folder))
    msg = str(err.value)
    assert str(folder / name) in msg and "corrupt or truncated" in msg and "not a readable" in msg
    assert "weights_only" not in msg  # never suggests unsafe loading
    assert "virnuc-fetch-models" in msg


def test_refused_global_in_bin_names_it_and_never_suggests_unsafe_loading(tmp_path):
    state = random_state_dict(TINY_CONFIG, seed=0)
    folder = write_folder(tmp_path / "m", state=state, fmt="bin")
    torch.save({**state, "extra": _Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="refusing to load") as err:
        dnabert.load(str(folder))
    msg = str(err.value)
    assert str(folder / "pytorch_model.bin") in msg and "system" in msg
    assert "weights_only" not in msg and not (tmp_path / "pwned").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_full_size_shapes_are_dnabert_s():
    shapes = expected_shapes(FULL_CONFIG)
    assert len(shapes) == 4 + 12 * 11
    n = sum(math.prod(s) for s in shapes.values()) + 768 * 768 + 768  # + pooler
    assert 116e6 < n < 118e6  # "DNABERT-2-117M"


def test_mlp_module_computes_what_the_encoder_path_does(enc):
    """``layer.mlp(x)`` (the padded path of bench/dnabert_throughput.py) is the second half of
    the encoder's post-attention step, which the packed-vs-reference tests check."""
    layer = enc.model.encoder.layer[0]
    gen = torch.Generator().manual_seed(0)
    h = enc.cfg.hidden_size
    a, x = torch.randn(7, h, generator=gen), torch.randn(7, h, generator=gen)
    with torch.no_grad():
        out = layer.attention.output
        mid = out.LayerNorm(out.dense(a) + x)
        want = dnabert._post_attention(a, x, layer.post_params(), layer.mlp.inter, layer.eps)
        torch.testing.assert_close(layer.mlp(mid), want, rtol=1e-5, atol=1e-5)


def test_building_skips_only_the_initialisation_the_checkpoint_overwrites(folder, monkeypatch):
    """The encoder's modules are built without random initialisation (every parameter comes
    from the checkpoint, strict), and initialisation works again afterwards."""
    calls = []
    real = torch.nn.init.kaiming_uniform_
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda t, **k: calls.append(1) or t)
    enc = dnabert.load(str(folder))
    assert calls == []
    torch.nn.Linear(2, 2)
    assert calls  # restored on leaving
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", real)
    from safetensors.torch import load_file

    want = load_file(str(folder / "model.safetensors"))  # the file itself, every parameter
    got = enc.model.state_dict()
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value.float(), rtol=0, atol=0, msg=name)
