"""Fused kernels' references, fp8 maths and the fused ESM-2 engine, on the CPU (and the GPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from virnuc_core.engine import fused
from virnuc_core.engine.attention import alibi_slopes, varlen_attention
from virnuc_core.engine.fp8 import ScaledMM, dequantize, quantize_weight
from virnuc_core.engine.packing import make_batch
from virnuc_core.settings import EmbedSettings, WorkflowSettings

ROOT = Path(__file__).resolve().parents[1]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- references against plain maths -----------------------------------------------------------
def test_add_layer_norm_reference_is_residual_then_layer_norm():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 40, generator=g), torch.randn(9, 40, generator=g)
    w, b = torch.randn(40, generator=g), torch.randn(40, generator=g)
    x0 = x.clone()
    out, h = fused.add_layer_norm(x, y, w, b, 1e-5)  # CPU: the reference
    assert out is x and torch.equal(x, x0 + y)  # in place
    s = x0 + y
    want = (s - s.mean(-1, keepdim=True)) / torch.sqrt(
        s.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(h, want * w + b, rtol=1e-5, atol=1e-5)
    _, h2 = fused.add_layer_norm(x0.clone(), None, w, b, 1e-5)  # no residual: LN alone
    torch.testing.assert_close(h2, F.layer_norm(x0, (40,), w, b, 1e-5))


def test_quantize_rows_error_is_within_one_e4m3_step():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(64, 300, generator=g) * torch.logspace(-3, 3, 64)[:, None]
    a[5] = 0.0  # an all-zero row: scale floor, values 0
    q, scale = fused.quantize_rows_reference(a)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    back = dequantize(q, scale)
    # e4m3: 3 mantissa bits (relative step 2^-3, rounding error <= 2^-4), subnormals below
    # 2^-6 of the scale-normalised range (absolute error <= 2^-10 * scale)
    bound = torch.maximum(a.abs() * 2**-4, scale * 2**-9)
    assert torch.all((back - a).abs() <= bound * 1.0001)
    assert torch.all(back[5] == 0) and torch.allclose(
        q.float().abs().amax(1)[torch.arange(64) != 5], torch.tensor(448.0)
    )


def test_scaled_mm_emulation_is_the_dequantised_product():
    g = torch.Generator().manual_seed(2)
    a, w, bias = torch.randn(33, 64, generator=g), torch.randn(48, 64, generator=g), torch.randn(48)
    a8, a_s = fused.quantize_rows_reference(a)
    w8, w_s = quantize_weight(w)
    assert w8.shape == (48, 64) and w_s.shape == (1, 48)
    out = ScaledMM()(a8, a_s, w8, w_s, bias, out_dtype=torch.float32)
    want = dequantize(a8, a_s) @ dequantize(w8, w_s.reshape(-1, 1)).T + bias
    torch.testing.assert_close(out, want)
    rel = (out - (a @ w.T + bias)).norm() / (a @ w.T + bias).norm()
    assert rel < 0.06  # fp8 on both operands: a few percent


def test_rotary_reference_matches_esm2_formula():
    from virnuc_core.engine.models.esm2 import rotate_half

    g = torch.Generator().manual_seed(3)
    tokens, heads, hd = 21, 2, 8
    qkv = torch.randn(tokens, 3 * heads * hd, generator=g)
    pos = torch.arange(tokens) % 7
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.cat([pos[:, None] * inv, pos[:, None] * inv], -1)[:, None, None, :]
    t = qkv.view(tokens, 3, heads, hd).clone()
    want = t[:, :2] * freqs.cos() + rotate_half(t[:, :2]) * freqs.sin()
    q, k, v = fused.rotary_qkv(qkv, *fused.rotary_tables(pos, inv), heads)
    torch.testing.assert_close(torch.stack([q, k], 1), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, t[:, 2])


def test_linear_gelu_reference_and_triton_backend_fallback():
    g = torch.Generator().manual_seed(4)
    h, w, b = torch.randn(10, 64, generator=g), torch.randn(32, 64, generator=g), torch.randn(32)
    torch.testing.assert_close(fused.linear_gelu(h, w, b), F.gelu(h @ w.T + b))
    lengths = [3, 1, 12]
    batch = make_batch([np.zeros(n, dtype=np.int64) for n in lengths])
    q, k, v = (torch.randn(16, 4, 8, generator=g) for _ in range(3))
    for slopes in (None, alibi_slopes(4)):  # CPU: the triton backend runs the loop's maths
        got = varlen_attention(q, k, v, batch, "triton", slopes=slopes)
        torch.testing.assert_close(got, varlen_attention(q, k, v, batch, "loop", slopes=slopes))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")
def test_triton_kernels_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "interpret_kernels.py")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


# -- the fused ESM-2 engine on the CPU ---------------------------------------------------------
esm = pytest.importorskip("esm")
SEQS = ["MKV", "A" * 40, "LAGVSERTIDPKQNFYMHWC" * 3, "M", "<mask>KLV" * 5]


@pytest.mark.parametrize("residual_in_matmul", [("out", "fc2"), ("out",), ("fc2",), ()])
def test_fused_engine_matches_fair_esm(residual_in_matmul):
    from virnuc_core.engine.models.esm2 import ESMEncoder
    from virnuc_core.engine.models.esm2_load import random_model

    fair, alphabet = random_model(seed=2, num_layers=3, embed_dim=64, attention_heads=4)
    with torch.no_grad():  # biases large enough that leaving one out would show
        for layer in fair.layers:
            layer.fc2.bias.normal_(0, 0.5)
            layer.self_attn.out_proj.bias.normal_(0, 0.5)
    for repr_layer in (3, 1, 0):  # 3: final LayerNorm; 1: the raw stream after one layer
        enc = ESMEncoder(fair, alphabet, spec="tiny3", fused=True, repr_layer=repr_layer,
                         residual_in_matmul=residual_in_matmul)  # fmt: skip
        assert enc.ops.residual_in_matmul == residual_in_matmul and not enc.compiled
        assert ("add into the residual" in enc.ops.describe()) is bool(residual_in_matmul)
        cos = cosines(enc.embed(SEQS, token_budget=64), enc.reference_embed(SEQS))
        assert cos.min() >= 0.99999, (repr_layer, cos)


def test_pending_biases_are_the_out_and_fc2_biases_of_earlier_layers():
    from virnuc_core.engine.models.esm2 import PackedESM2
    from virnuc_core.engine.models.esm2_load import random_model

    fair, _ = random_model(seed=4, num_layers=3, embed_dim=32, attention_heads=4)
    model = PackedESM2.from_fair(fair, "cpu", torch.float32)
    pending = model.pending_biases(("out", "fc2"))
    out = [layer.self_attn.out_proj.bias.detach() for layer in fair.layers]
    fc2 = [layer.fc2.bias.detach() for layer in fair.layers]
    assert pending.shape == (7, 32) and torch.equal(pending[0], torch.zeros(32))
    torch.testing.assert_close(pending[1], out[0])
    torch.testing.assert_close(pending[2], out[0] + fc2[0])
    torch.testing.assert_close(pending[5], out[0] + fc2[0] + out[1] + fc2[1] + out[2])
    torch.testing.assert_close(pending[6], sum(out) + sum(fc2))
    only_out = model.pending_biases(("out",))
    torch.testing.assert_close(only_out[4], out[0] + out[1])
    torch.testing.assert_close(only_out[5], out[0] + out[1] + out[2])
    torch.testing.assert_close(model.pending_biases(("fc2",))[5], fc2[0] + fc2[1])


def test_cublaslt_gelu_epilogue_on_the_cpu_is_the_erf_form():
    """On the CPU PyTorch computes it as matmul then erf GELU; on a GPU the epilogue's form is
    what bench/kernels_check.py measures (its error against both forms)."""
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    g = torch.Generator().manual_seed(7)
    lin = torch.nn.Linear(48, 96)
    h = torch.randn(33, 48, generator=g) * 3
    with torch.no_grad():
        got = LinearOps(gelu_epilogue="cublaslt").fc1_gelu(h, lin)
        u = F.linear(h, lin.weight, lin.bias)
    torch.testing.assert_close(got, F.gelu(u))
    assert (F.gelu(u, approximate="tanh") - F.gelu(u)).abs().max() > 1e-4  # the forms differ
    assert "cuBLASLt" in LinearOps(gelu_epilogue="cublaslt").describe()
    with pytest.raises(ValueError, match="gelu_epilogue"):
        LinearOps(gelu_epilogue="cuda")


def test_fp8_out_or_fc2_keeps_the_residual_out_of_the_matmul():
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    assert LinearOps().residual_in_matmul == ("out", "fc2")
    assert LinearOps(fp8=True).residual_in_matmul == ()  # torch._scaled_mm cannot accumulate
    assert LinearOps(fp8=True, fp8_layers=("qkv", "fc1")).residual_in_matmul == ("out", "fc2")
    assert LinearOps(fp8=True, fp8_layers=("fc1", "fc2")).residual_in_matmul == ("out",)
    with pytest.raises(ValueError, match="residual_in_matmul"):
        LinearOps(residual_in_matmul=("qkv",))


@pytest.mark.parametrize("layers", [("qkv", "out", "fc1", "fc2"), ("fc1", "fc2")])
def test_fp8_maths_close_to_fp32_reference(layers):
    from virnuc_core.engine.models.esm2 import ESMEncoder, PackedESM2
    from virnuc_core.engine.models.esm2_load import random_model
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    fair, alphabet = random_model(seed=3, num_layers=3, embed_dim=64, attention_heads=4)
    model = PackedESM2.from_fair(fair, "cpu", torch.float32, fp8=True, fp8_layers=layers)
    lin = model.layers[0].fc1
    assert lin.weight.numel() == 0 and lin.weight_fp8.dtype == torch.float8_e4m3fn
    qkv = model.layers[0].qkv  # kept in full precision unless quantised
    assert (qkv.weight.numel() == 0) == ("qkv" in layers) and hasattr(qkv, "weight_fp8") == (
        "qkv" in layers
    )
    ref = ESMEncoder(fair, alphabet, spec="tiny3")
    batch = make_batch(ref.tokenize(SEQS))
    ops = LinearOps(fp8=True, fp8_layers=layers)
    assert ops.describe().startswith("fused kernels; fp8") and "/".join(layers) in ops.describe()
    with torch.inference_mode():
        hidden = model(batch, 3, "loop", None, ops)
    from virnuc_core.engine.packing import segment_mean

    got = segment_mean(hidden, batch.seq_ids, ref.pool_weight(batch), batch.num_seqs)
    cos = cosines(got.numpy(), ref.reference_embed(SEQS))
    assert cos.min() >= 0.99, cos


# -- settings ----------------------------------------------------------------------------------
def test_schema_defaults_and_fp8_kept_out_of_the_config():
    import yaml

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]
    base = {"samples": {"s": "x"}, "chunk_length": 500}
    assert props["fused_kernels"]["default"] is True
    assert WorkflowSettings.from_config(base).fused_kernels is True
    assert props["gelu_in_matmul"]["default"] is True  # measured: round 3
    assert WorkflowSettings.from_config(base).gelu_in_matmul is True
    assert "fp8" not in props["precision"]["enum"]  # until it passes its gates (round 2)
    assert "triton" in props["attention_backend"]["enum"]


def test_fp8_and_fused_kernels_settings():
    base = {"samples": {"s": "x"}, "chunk_length": 500, "shards": 1,
            "models": {"dnabert": "tiny", "esm": "tiny"}}  # fmt: skip
    s = WorkflowSettings.from_config({**base, "precision": "fp8", "fused_kernels": True})
    esm_s, dna_s = s.embed("esm"), s.embed("dnabert")
    assert esm_s.fused_kernels and not dna_s.fused_kernels
    assert esm_s.resolved_precision("cuda") == "fp8" and dna_s.resolved_precision("cuda") == "bf16"
    assert esm_s.resolved_precision("cpu") == "fp32"
    assert WorkflowSettings.from_config(base).embed("esm").fused_kernels is True  # measured
    off = WorkflowSettings.from_config({**base, "fused_kernels": False})
    assert off.embed("esm").fused_kernels is False
    # the GELU epilogue belongs to the fused engine, and to ESM-2 only
    assert esm_s.gelu_in_matmul and not dna_s.gelu_in_matmul
    assert off.embed("esm").gelu_in_matmul is False
    erf = WorkflowSettings.from_config({**base, "gelu_in_matmul": False})
    assert erf.embed("esm").gelu_in_matmul is False and erf.embed("esm").fused_kernels
    assert EmbedSettings.from_json(esm_s.to_json()) == esm_s


# -- GPU (skipped without one) -----------------------------------------------------------------
@pytest.mark.gpu
@gpu
def test_gpu_kernels_match_references():
    g = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(300, 2560, device="cuda", generator=g).bfloat16()
    y = torch.randn(300, 2560, device="cuda", generator=g).bfloat16()
    w, b = torch.rand(2560, device="cuda") + 0.5, torch.randn(2560, device="cuda") * 0.1
    for fp8 in (False, True):
        got = fused.add_layer_norm(x.clone(), y, w, b, 1e-5, fp8)
        want = fused.add_layer_norm_reference(x.clone(), y, w, b, 1e-5, fp8)
        torch.testing.assert_close(got[0], want[0])
        if fp8:
            torch.testing.assert_close(got[1][1], want[1][1])
            assert (got[1][0].float() != want[1][0].float()).float().mean() < 0.01
        else:
            torch.testing.assert_close(got[1], want[1], rtol=2e-2, atol=2e-2)
    h, wt = x[:, :512].contiguous(), (torch.randn(1024, 512, device="cuda") / 23).bfloat16()
    bias = torch.randn(1024, device="cuda").bfloat16()
    got = fused.linear_gelu(h, wt, bias)
    torch.testing.assert_close(
        got, F.gelu(F.linear(h, wt, bias).float()).bfloat16(), rtol=2e-2, atol=2e-2
    )


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_gpu_fused_engine_close_to_reference(precision):
    from virnuc_core.engine.models import esm2

    enc = esm2.load("tiny", device="cuda", precision=precision, fused=True, backend="triton")
    seqs = SEQS * 20
    cos = cosines(enc.embed(seqs), enc.reference_embed(seqs))
    assert cos.mean() >= 0.999 and cos.min() >= (0.99 if precision == "bf16" else 0.98)


@pytest.mark.gpu
@gpu
def test_gpu_rotary_and_residual_options_match_the_engine_without_them():
    """The residual added by cuBLAS (bf16), with rotary inside the Triton kernel or the
    cuBLASLt GELU epilogue, against the round-2 engine (rotary pass, residual+LayerNorm) and
    fair-esm's fp32 forward."""
    from virnuc_core.engine.models.esm2 import ESMEncoder
    from virnuc_core.engine.models.esm2_load import random_model

    fair, alphabet = random_model(seed=6, num_layers=4, embed_dim=256, attention_heads=4)
    seqs = SEQS * 20

    def encoder(**options):
        return ESMEncoder(fair, alphabet, spec="tiny4", device="cuda", precision="bf16",
                          backend="triton", fused=True, **options)  # fmt: skip

    old = encoder(residual_in_matmul=())
    before, reference = old.embed(seqs), old.reference_embed(seqs)
    for options in ({}, {"rotary_in_attention": True}, {"gelu_epilogue": "cublaslt"}):
        new = encoder(**options)
        assert new.ops.residual_in_matmul == ("out", "fc2")
        got = new.embed(seqs)
        assert cosines(got, before).min() >= 0.9999, options
        cos = cosines(got, reference)
        assert cos.mean() >= 0.999 and cos.min() >= 0.99, options


def test_heads_too_small_for_the_triton_kernel_take_the_per_sequence_path(monkeypatch):
    """The tiny DNABERT-S has 8-value heads: tl.dot needs 16, so the kernel would not compile
    (seen on an H200); the triton backend then runs the same maths one sequence at a time."""
    from virnuc_core.engine import attention, fused
    from virnuc_core.engine.packing import make_batch
    from virnuc_core.engine.triton_attention import head_dim_fits, varlen_attention_triton

    assert [head_dim_fits(n) for n in (8, 16, 24, 64, 256, 512)] == [
        False, True, False, True, True, False]  # fmt: skip
    monkeypatch.setattr(fused, "triton_ok", lambda *t: True)  # as on a GPU
    batch = make_batch([np.arange(5), np.arange(3)])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(8, 2, 8, generator=g) for _ in range(3))
    got = attention.varlen_attention(q, k, v, batch, "triton")
    torch.testing.assert_close(got, attention.varlen_attention(q, k, v, batch, "loop"))
    with pytest.raises(ValueError, match="head sizes 16, 32, .. 256, not 8"):
        varlen_attention_triton(q, k, v, batch.cu_seqlens, batch.max_seqlen, 8**-0.5)
