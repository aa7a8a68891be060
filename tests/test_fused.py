"""Fused kernels' references and ESM-2's one engine, on the CPU (and the GPU)."""

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
from virnuc_core.engine.packing import make_batch

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


def test_rotary_reference_matches_esm2_formula():
    def rotate_half(x):  # fair-esm's rotary convention: (x1, x2) -> (-x2, x1)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

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


def test_triton_backend_falls_back_to_the_loop_on_the_cpu():
    g = torch.Generator().manual_seed(4)
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
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    fair, _ = random_model(seed=2, num_layers=3, embed_dim=64, attention_heads=4)
    with torch.no_grad():  # biases large enough that leaving one out would show
        for layer in fair.layers:
            layer.fc2.bias.normal_(0, 0.5)
            layer.self_attn.out_proj.bias.normal_(0, 0.5)
    for repr_layer in (3, 1, 0):  # 3: final LayerNorm; 1: the raw stream after one layer
        enc = ESMEncoder(fair, "tiny3", repr_layer=repr_layer)
        enc.ops = LinearOps(residual_in_matmul)  # production: both (a bench compares)
        assert enc.ops.residual_in_matmul == residual_in_matmul
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
        got = LinearOps().fc1_gelu(h, lin)
        u = F.linear(h, lin.weight, lin.bias)
    torch.testing.assert_close(got, F.gelu(u))
    assert (F.gelu(u, approximate="tanh") - F.gelu(u)).abs().max() > 1e-4  # the forms differ
    assert "cuBLASLt" in LinearOps().describe()


def test_out_and_fc2_add_into_the_residual_stream_by_default():
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    assert LinearOps().residual_in_matmul == ("out", "fc2")
    with pytest.raises(ValueError, match="residual_in_matmul"):
        LinearOps(residual_in_matmul=("qkv",))


# -- GPU (skipped without one) -----------------------------------------------------------------
@pytest.mark.gpu
@gpu
def test_gpu_kernels_match_references():
    g = torch.Generator(device="cuda").manual_seed(5)
    x = torch.randn(300, 2560, device="cuda", generator=g).bfloat16()
    y = torch.randn(300, 2560, device="cuda", generator=g).bfloat16()
    w, b = torch.rand(2560, device="cuda") + 0.5, torch.randn(2560, device="cuda") * 0.1
    shift = torch.randn(2560, device="cuda")
    for s in (None, shift):
        got = fused.add_layer_norm(x.clone(), y, w, b, 1e-5, s)
        want = fused.add_layer_norm_reference(x.clone(), y, w, b, 1e-5, s)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1], rtol=2e-2, atol=2e-2)
    qkv = torch.randn(300, 3 * 40 * 64, device="cuda", generator=g).bfloat16()
    cos, sin = fused.rotary_tables(torch.arange(300, device="cuda") % 77, torch.rand(32).cuda())
    got = fused.rotary_qkv(qkv.clone(), cos, sin, 40)
    want = fused.rotary_qkv_reference(qkv.clone(), cos, sin, 40)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@gpu
def test_gpu_fused_engine_close_to_reference():
    from virnuc_core.engine.models import esm2

    enc = esm2.load("tiny", device="cuda", precision="bf16", backend="triton")
    seqs = SEQS * 20
    cos = cosines(enc.embed(seqs), enc.reference_embed(seqs))
    assert cos.mean() >= 0.999 and cos.min() >= 0.99


@pytest.mark.gpu
@gpu
def test_gpu_residual_in_matmul_matches_the_engine_without_it():
    """The residual added by cuBLAS (bf16) and the cuBLASLt GELU epilogue, against the engine
    with residual+LayerNorm and fair-esm's fp32 forward."""
    from virnuc_core.engine.models.esm2 import ESMEncoder
    from virnuc_core.engine.models.esm2_load import random_model
    from virnuc_core.engine.models.esm2_matmuls import LinearOps

    fair, _ = random_model(seed=6, num_layers=4, embed_dim=256, attention_heads=4)
    seqs = SEQS * 20
    old = ESMEncoder(fair, "tiny4", "cuda", "bf16", "triton")
    old.ops = LinearOps(residual_in_matmul=())
    before, reference = old.embed(seqs), old.reference_embed(seqs)
    new = ESMEncoder(fair, "tiny4", "cuda", "bf16", "triton")
    assert new.ops.residual_in_matmul == ("out", "fc2")
    got = new.embed(seqs)
    assert cosines(got, before).min() >= 0.9999
    cos = cosines(got, reference)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99


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
