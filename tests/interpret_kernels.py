"""The Triton kernels of virnuc_core.engine.fused / triton_attention vs their PyTorch references,
run on the CPU by Triton's interpreter (TRITON_INTERPRET=1). A script, run in its own process by
tests/test_fused.py (the interpreter must be switched on before Triton is imported); exits 0
when every check holds, prints what failed otherwise.

Interpreter limits worked around here, not in the kernels: its bf16 matrix products are wrong
(numpy has no bf16), so the attention kernel and the model are checked in fp32; its bf16
conversions round a little differently from the GPU's (carries at mantissa overflow), so those
checks allow a few values one rounding step off; with numpy >= 2.4 its loop bounds need a
scalar fix-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import triton.runtime.interpreter as interpreter  # noqa: E402

_patch = interpreter._patch_lang_tensor


def _patch_index(tensor, scope):  # loop bounds: numpy >= 2.4 refuses int() of a 1-element array
    _patch(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda t: int(np.asarray(t.handle.data).reshape(-1)[0]))


interpreter._patch_lang_tensor = _patch_index

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from virnuc_core.engine import fused  # noqa: E402
from virnuc_core.engine.attention import _loop, alibi_slopes  # noqa: E402
from virnuc_core.engine.packing import make_batch  # noqa: E402
from virnuc_core.engine.triton_attention import varlen_attention_triton  # noqa: E402

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        FAILED.append(name)


def close_fraction(got, want, rel: float) -> float:
    got, want = got.float(), want.float()
    return float(((got - want).abs() <= rel * want.abs() + 1e-6).float().mean())


def check_add_layer_norm() -> None:
    g = torch.Generator().manual_seed(1)
    rows, cols = 37, 80
    x, y = torch.randn(rows, cols, generator=g), torch.randn(rows, cols, generator=g)
    w, b = 1 + 0.1 * torch.randn(cols, generator=g), 0.1 * torch.randn(cols, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        for with_y in (False, True):
            x1, x2 = x.to(dtype), x.to(dtype).clone()
            yy = y.to(dtype) if with_y else None
            got = fused.add_layer_norm(x1, yy, w, b, 1e-5)
            want = fused.add_layer_norm_reference(x2, yy, w, b, 1e-5)
            name = f"add_layer_norm {dtype} y={with_y}"
            check(name + " x", close_fraction(got[0], want[0], 1e-2) == 1.0)
            check(name + " h", close_fraction(got[1], want[1], 2e-2) > 0.98)
    shift = torch.randn(cols, generator=g)  # the biases not yet added: LN input only
    for dtype in (torch.float32, torch.bfloat16):
        x1 = x.to(dtype)
        x0 = x1.clone()
        _, got = fused.add_layer_norm(x1, None, w, b, 1e-5, shift=shift)
        want = F.layer_norm(x0.float() + shift, (cols,), w, b, 1e-5)
        check(f"add_layer_norm {dtype} shift x unchanged", torch.equal(x1, x0))
        check(f"add_layer_norm {dtype} shift h", close_fraction(got, want, 2e-2) > 0.98)


def check_rotary() -> None:
    g = torch.Generator().manual_seed(2)
    tokens, heads, hd = 29, 3, 16
    qkv = torch.randn(tokens, 3 * heads * hd, generator=g).bfloat16()
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    cos, sin = fused.rotary_tables(torch.arange(tokens) % 11, inv)
    a, b = qkv.clone(), qkv.clone()
    fused.rotary_qkv(a, cos, sin, heads)
    fused.rotary_qkv_reference(b, cos, sin, heads)
    check("rotary", close_fraction(a, b, 2e-2) > 0.98)


def check_attention() -> None:
    g = torch.Generator().manual_seed(4)
    lengths = [5, 1, 40, 17, 16]
    batch = make_batch([np.zeros(n, dtype=np.int64) for n in lengths])
    qkv = torch.randn(sum(lengths), 3, 4, 16, generator=g)  # strided q, k, v views
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    for slopes in (None, alibi_slopes(4)):
        got = varlen_attention_triton(q, k, v, batch.cu_seqlens, batch.max_seqlen, 0.25, slopes)
        want = _loop(q, k, v, batch, slopes, 0.25)
        err = (got - want).abs().max()
        check(f"attention alibi={slopes is not None}", bool(err < 1e-5), f"{err:.2e}")


def check_fused_esm2() -> None:
    """ESM-2's engine with its Triton kernels (fp32: the interpreter's bf16 products are
    wrong) against fair-esm's own forward."""
    from virnuc_core.engine.models.esm2 import ESMEncoder
    from virnuc_core.engine.models.esm2_load import random_model

    fair, _ = random_model(seed=5, num_layers=2, embed_dim=128, attention_heads=4)
    enc = ESMEncoder(fair, "tiny2", backend="triton")
    assert enc.ops.residual_in_matmul
    seqs = ["MKV", "A" * 30, "LAGVSERTIDPKQNFYMHWC" * 2]
    got, want = enc.embed(seqs, token_budget=64), enc.reference_embed(seqs)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    check("ESM-2 with the Triton kernels, residual in the matmuls", cos.min() > 0.99999,
          f"min cosine {cos.min():.7f}")  # fmt: skip


if __name__ == "__main__":
    check_add_layer_norm()
    check_rotary()
    check_attention()
    check_fused_esm2()
    print("failed:", FAILED if FAILED else "none")
    sys.exit(1 if FAILED else 0)
