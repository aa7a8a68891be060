"""The fused kernels at ESM-2 3B / DNABERT-S sizes: right (vs references) and fast (vs ceilings).

For each kernel of virnuc_core.engine.fused / triton_attention and each fp8 matmul shape: the
largest
difference from its PyTorch reference on fresh random data, its median time (CUDA events), the
bytes it must move or the FLOPs it must do, and the rate that gives, next to what it replaces
(eager PyTorch, torch.compile, cuBLAS, PyTorch's varlen flash attention, SDPA). Also the two
ceilings (device copy bandwidth; bf16 and fp8 matmul rates) and, for the attention of the
DNABERT-S padded backend, the first call on a new batch shape against a repeat (the per-shape
planning suspected of the first-pass stall).

    python -m bench.kernels_check --out bench/results/kernels_check_h200.json   # ~40 s, GPU
    python -m bench.kernels_check --quick                                      # CPU smoke run
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench import _harness as h
from virnuc_core.engine import attention, fp8, fused
from virnuc_core.engine.packing import make_batch
from virnuc_core.engine.triton_attention import varlen_attention_triton

CUDA, DEV = h.CUDA, h.DEVICE
ROWS: list[dict] = []


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def timed(fn, iters: int = 10) -> float:
    """Median seconds of ``fn`` (events on a GPU)."""
    return h.time_cuda(fn, warmup=2, iters=iters)


def record(name: str, seconds: float, err: float | None = None, gbytes=None, tflop=None, **extra):
    """One row: time, error, and the rate from the bytes or FLOPs it needs."""
    row = {"kernel": name, "ms": 1000 * seconds, "rel_err": err, **extra}
    if gbytes is not None:
        row["GB"], row["TB/s"] = gbytes, gbytes / seconds / 1000
    if tflop is not None:
        row["TFLOP"], row["TFLOP/s"] = tflop, tflop / seconds
    ROWS.append(row)
    print(fmt(row), flush=True)


def fmt(r: dict) -> str:
    rate = f"{r['TB/s']:.2f} TB/s" if "TB/s" in r else ""
    rate = rate or (f"{r['TFLOP/s']:.0f} TFLOP/s" if "TFLOP/s" in r else "")
    err = "" if r.get("rel_err") is None else f"err {r['rel_err']:.1e}"
    return f"{r['kernel']:<46} {r['ms']:9.3f} ms  {rate:>14}  {err}  {r.get('note', '')}"


def ceilings(n: int) -> dict:
    src = torch.empty(n * n * 8, dtype=torch.uint8, device=DEV)  # 8 n^2 bytes (2 GB at 16k)
    dst = torch.empty_like(src)
    sec = timed(lambda: dst.copy_(src))
    out = {"copy_TB_s": 2 * src.numel() / sec / 1e12}
    out["bf16_matmul_tflops"] = h.measure_matmul_tflops(torch.bfloat16, n=8192 if CUDA else 256)
    out["fp8_rowwise_matmul_tflops"] = fp8.measure_fp8_tflops() if CUDA else None
    print(f"ceilings: {out}", flush=True)
    return out


def check_layer_norms(t: int, d: int) -> None:
    """add_layer_norm (bf16 / fp8 h; with the pending-bias shift and no residual input) against
    its reference, and against torch.compile and eager add + LayerNorm."""
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(t, d, device=DEV, generator=g).bfloat16()
    y = torch.randn(t, d, device=DEV, generator=g).bfloat16()
    w, b = torch.rand(d, device=DEV) + 0.5, 0.1 * torch.randn(d, device=DEV)
    e = x.element_size()
    for fp8_out in (False, True):
        got = fused.add_layer_norm(x.clone(), y, w, b, 1e-5, fp8_out)
        want = fused.add_layer_norm_reference(x.clone(), y, w, b, 1e-5, fp8_out)
        hg = got[1][0].float() * got[1][1] if fp8_out else got[1]
        hw = want[1][0].float() * want[1][1] if fp8_out else want[1]
        xs = x.clone()
        sec = timed(lambda xs=xs, f8=fp8_out: fused.add_layer_norm(xs, y, w, b, 1e-5, f8))
        gb = t * d * (3 * e + (1 if fp8_out else e)) / 1e9
        record(f"add_layer_norm ({'fp8' if fp8_out else 'bf16'} h)", sec, rel_err(hg, hw), gb,
               note=f"x err {rel_err(got[0], want[0]):.0e}")  # fmt: skip

    # residual_in_matmul: no y, the pending biases as an fp32 shift; a read of x, a write of h
    shift = 0.1 * torch.randn(d, device=DEV, generator=g)
    got = fused.add_layer_norm(x.clone(), None, w, b, 1e-5, shift=shift)[1]
    want = F.layer_norm(x.float() + shift, (d,), w, b, 1e-5)
    sec = timed(lambda: fused.add_layer_norm(x, None, w, b, 1e-5, shift=shift))
    record(
        "layer_norm + bias shift (no residual add)", sec, rel_err(got, want), t * d * 2 * e / 1e9
    )

    wb, bb = w.to(x.dtype), b.to(x.dtype)  # eager LayerNorm wants one dtype

    def add_ln(a, c):
        a = a + c
        return a, F.layer_norm(a, (d,), wb, bb, 1e-5)

    compiled = torch.compile(add_ln, dynamic=False)
    record(
        "  vs torch.compile add + LayerNorm",
        timed(lambda: compiled(x, y)),
        None,
        t * d * 4 * e / 1e9,
    )
    record("  vs eager add + LayerNorm", timed(lambda: add_ln(x, y)), None, t * d * 4 * e / 1e9)


def check_elementwise(t: int, d: int, f: int) -> None:
    """rotary_qkv, gelu and quantize_rows against their references."""
    g = torch.Generator(device=DEV).manual_seed(2)
    x = torch.randn(t, d, device=DEV, generator=g).bfloat16()
    e = x.element_size()
    qkv = torch.randn(t, 3 * d, device=DEV, generator=g).bfloat16()
    inv = 1.0 / (10000 ** (torch.arange(0, 64, 2, device=DEV).float() / 64))
    cos, sin = fused.rotary_tables(torch.arange(t, device=DEV) % 170, inv)
    a, r = (
        fused.rotary_qkv(qkv.clone(), cos, sin, d // 64),
        fused.rotary_qkv_reference(qkv.clone(), cos, sin, d // 64),
    )
    qq = qkv.clone()
    record("rotary_qkv (in place)", timed(lambda: fused.rotary_qkv(qq, cos, sin, d // 64)),
           rel_err(torch.stack(a[:2]), torch.stack(r[:2])), t * 2 * d * 2 * e / 1e9)  # fmt: skip
    u = torch.randn(t, f, device=DEV, generator=g).bfloat16()
    uu = u.clone()
    record("gelu (in place)", timed(lambda: fused.gelu(uu)),
           rel_err(fused.gelu(u.clone()), F.gelu(u.float())), t * f * 2 * e / 1e9)  # fmt: skip
    record("  vs eager F.gelu", timed(lambda: F.gelu(u)), None, t * f * 2 * e / 1e9)
    for name, a_in, gel in (
        ("quantize_rows(gelu(fc1 out))", u, True),
        ("quantize_rows(attn out)", x, False),
    ):
        q, s = fused.quantize_rows(a_in, gel)
        q2, s2 = fused.quantize_rows_reference(F.gelu(a_in.float()) if gel else a_in)
        err = rel_err(q.float() * s, q2.float() * s2)
        sec = timed(lambda a_in=a_in, gel=gel: fused.quantize_rows(a_in, gel))
        record(name, sec, err, a_in.numel() * (e + 1) / 1e9)


def check_matmuls(t: int, d: int, f: int) -> None:
    g = torch.Generator(device=DEV).manual_seed(1)
    hid = torch.randn(t, d, device=DEV, generator=g).bfloat16()
    w1 = (torch.randn(f, d, device=DEV, generator=g) / d**0.5).bfloat16()
    b1 = (0.1 * torch.randn(f, device=DEV, generator=g)).bfloat16()
    flop = 2 * t * d * f / 1e12
    sub = slice(0, 4096)
    want = F.gelu(F.linear(hid[sub].float(), w1.float(), b1.float()))
    t0 = time.perf_counter()
    got = fused.linear_gelu(hid, w1, b1)
    h.sync()
    tune = time.perf_counter() - t0
    sec = timed(lambda: fused.linear_gelu(hid, w1, b1))
    record("linear_gelu fc1 (Triton, GELU epilogue)", sec, rel_err(got[sub], want), tflop=flop,
           note=f"first call (autotune) {tune:.1f} s")  # fmt: skip
    record("  vs cuBLAS fc1 + gelu pass", timed(lambda: fused.gelu(F.linear(hid, w1, b1))),
           rel_err(fused.gelu(F.linear(hid, w1, b1))[sub], want), tflop=flop)  # fmt: skip
    record("  cuBLAS fc1 alone", timed(lambda: F.linear(hid, w1, b1)), None, tflop=flop)
    # cuBLASLt's GELU epilogue (gelu_epilogue="cublaslt"): its error against both GELU forms
    lt = torch._addmm_activation(b1, hid, w1.t(), use_gelu=True)
    tanh = F.gelu(F.linear(hid[sub].float(), w1.float(), b1.float()), approximate="tanh")
    # its form, told apart in fp32 (bf16 rounding would hide the ~1e-4 between the forms)
    h32, w32, b32 = hid[sub].float(), w1.float(), b1.float()
    lt32 = torch._addmm_activation(b32, h32, w32.t(), use_gelu=True)
    form = {f: rel_err(lt32, F.gelu(F.linear(h32, w32, b32), approximate=f))
            for f in ("none", "tanh")}  # fmt: skip
    record("  cuBLASLt fc1 + GELU epilogue", timed(lambda: torch._addmm_activation(
        b1, hid, w1.t(), use_gelu=True)), rel_err(lt[sub], want), tflop=flop,
        gelu_form_err_fp32=form, note=f"bf16 err vs tanh GELU {rel_err(lt[sub], tanh):.1e}; "
        f"fp32 err vs erf {form['none']:.1e}, vs tanh {form['tanh']:.1e}")  # fmt: skip
    shapes = {"qkv": (3 * d, d), "out": (d, d), "fc1": (f, d), "fc2": (d, f)}
    for name, (n, k) in shapes.items():
        a = torch.randn(t, k, device=DEV, generator=g).bfloat16()
        w = (torch.randn(n, k, device=DEV, generator=g) / k**0.5).bfloat16()
        b = (0.1 * torch.randn(n, device=DEV, generator=g)).bfloat16()
        ref = F.linear(a[sub].float(), w.float(), b.float())
        flop = 2 * t * n * k / 1e12
        record(f"bf16 cuBLAS {name} ({n}x{k})", timed(lambda a=a, w=w, b=b: F.linear(a, w, b)),
               rel_err(F.linear(a, w, b)[sub], ref), tflop=flop)  # fmt: skip
        if name in ("out", "fc2"):  # residual_in_matmul: x += a W^T (cuBLAS, beta = 1)
            x = torch.randn(t, n, device=DEV, generator=g).bfloat16()
            got = x.clone().addmm_(a, w.t())[sub]
            err = rel_err(got, x[sub].float() + ref - b.float())
            sec = timed(lambda x=x, a=a, w=w: x.addmm_(a, w.t()))
            record(f"  bf16 cuBLAS {name} adding into the residual (addmm_)", sec, err, tflop=flop)
        if not CUDA or not fp8.hardware_fp8(DEV):
            continue
        a8, a_s = fused.quantize_rows(a)
        w8, w_s = fp8.quantize_weight(w.float())
        for fast in (True, False):
            mm = fp8.ScaledMM(fast)
            err = rel_err(mm(a8, a_s, w8, w_s, b)[sub], ref)
            sec = timed(lambda mm=mm, a8=a8, a_s=a_s, w8=w8, w_s=w_s, b=b: mm(a8, a_s, w8, w_s, b))
            record(f"  fp8 _scaled_mm {name} {'fast' if fast else 'fp32'} accum", sec, err,
                   tflop=flop, note="" if mm.bias_in_kernel else "bias added after")  # fmt: skip


def packed(lengths: list[int], heads: int, hd: int, seed: int):
    batch = make_batch([np.zeros(n, dtype=np.int64) for n in lengths]).to(DEV)
    g = torch.Generator(device=DEV).manual_seed(seed)
    qkv = torch.randn(batch.input_ids.numel(), 3, heads, hd, device=DEV, generator=g)
    qkv = qkv.to(torch.bfloat16 if CUDA else torch.float32)
    return batch, qkv[:, 0], qkv[:, 1], qkv[:, 2]


def attn_flop(lengths, heads, hd) -> float:
    return sum(4.0 * n * n * heads * hd for n in lengths) / 1e12


def check_esm_attention(budget: int, quick: bool) -> None:
    """ESM-2 3B attention over a packed batch of chunk-shaped proteins: triton vs varlen."""
    esm_lens, total = [], 0
    for s in h.chunk_proteins(4000 if not quick else 200, 0):
        if total + len(s) + 2 > budget:
            break
        esm_lens.append(len(s) + 2)
        total += len(s) + 2
    heads = 40 if not quick else 4
    batch, q, k, v = packed(esm_lens, heads, 64, 2)
    n_ref = sum(esm_lens[:40])
    ref = attention.varlen_attention(q[:n_ref].float(), k[:n_ref].float(), v[:n_ref].float(),
                                     _prefix(batch, 40), "loop", scale=1.0)  # fmt: skip
    fl = attn_flop(esm_lens, heads, 64)
    for backend in ("triton", "varlen"):
        if backend == "varlen" and not CUDA:
            continue
        out = attention.varlen_attention(q, k, v, batch, backend, scale=1.0)
        sec = timed(lambda b=backend: attention.varlen_attention(q, k, v, batch, b, scale=1.0))
        record(f"ESM-2 attention {backend} ({len(esm_lens)} seqs)", sec,
               rel_err(out[:n_ref], ref), tflop=fl)  # fmt: skip
    check_rotary_attention(batch, q, k, v, n_ref, fl)


def check_rotary_attention(batch, q, k, v, n_ref: int, fl: float) -> None:
    """rotary_in_attention: the Triton kernel rotating q/k as it loads them vs the in-place
    rotary pass then the kernel (reference: fp32 rotary, then the loop backend)."""
    if not fused.triton_ok(q):
        return
    inv = 1.0 / (10000 ** (torch.arange(0, 64, 2, device=DEV).float() / 64))
    per_token = fused.rotary_tables(batch.positions, inv)
    per_position = fused.rotary_tables(torch.arange(batch.max_seqlen, device=DEV), inv)
    qkv = torch.stack([q, k, v], 1).flatten(1)  # (T, 3 * heads * 64), as the projection is
    heads = q.shape[1]
    rq, rk, rv = fused.rotary_qkv_reference(qkv[:n_ref].float(), *(t[:n_ref] for t in per_token),
                                            heads)  # fmt: skip
    ref = attention.varlen_attention(rq, rk, rv, _prefix(batch, 40), "loop", scale=1.0)
    views = qkv.view(qkv.shape[0], 3, heads, 64).unbind(1)
    cu, longest = batch.cu_seqlens, batch.max_seqlen

    def in_kernel():
        return varlen_attention_triton(*views, cu, longest, 1.0, rotary=per_position)

    def pass_then_kernel(work):  # the engine without the option: rotary in place, then attend
        rot = fused.rotary_qkv(work, *per_token, heads)
        return attention.varlen_attention(*rot, batch, "triton", scale=1.0)

    work = qkv.clone()  # timed passes rotate it again and again: the timing is the same
    record("ESM-2 attention triton, rotary in the kernel", timed(in_kernel),
           rel_err(in_kernel()[:n_ref], ref), tflop=fl)  # fmt: skip
    record("  vs rotary pass + triton attention", timed(lambda: pass_then_kernel(work)),
           rel_err(pass_then_kernel(qkv.clone())[:n_ref], ref), tflop=fl)  # fmt: skip


def check_dnabert_attention(budget: int, quick: bool) -> None:
    """ALiBi attention on three new batch shapes: each backend's first call and a repeat."""
    rng = np.random.default_rng(0)
    dna_heads = 12 if not quick else 4
    slopes = attention.alibi_slopes(dna_heads).to(DEV)
    for shape_seed in range(3):  # three new batch shapes: first call vs a repeat
        # each shape a new (sequences, longest) pair, as consecutive batches of a job are
        lens = rng.integers(60 - 5 * shape_seed, 114 + 9 * shape_seed,
                            size=budget // (87 + 3 * shape_seed)).tolist()  # fmt: skip
        batch, q, k, v = packed(lens, dna_heads, 64, 10 + shape_seed)
        n_ref = sum(lens[:40])
        ref = attention.varlen_attention(q[:n_ref].float(), k[:n_ref].float(),
                                         v[:n_ref].float(), _prefix(batch, 40), "loop",
                                         slopes=slopes, scale=0.125)  # fmt: skip
        names = {"triton": "triton", "padded": "padded (SDPA efficient)",
                 "padded-auto": "padded (SDPA auto)"}  # fmt: skip
        for label, name in names.items():
            if label != "triton" and not CUDA:
                continue
            with h.backend_label(label) as backend:
                batch.cache.clear()
                h.sync()
                t0 = time.perf_counter()
                out = attention.varlen_attention(q, k, v, batch, backend, slopes=slopes,
                                                 scale=0.125)  # fmt: skip
                h.sync()
                first = time.perf_counter() - t0

                def again(b=backend, q=q, k=k, v=v, batch=batch):
                    return attention.varlen_attention(q, k, v, batch, b, slopes=slopes,
                                                      scale=0.125)  # fmt: skip

                sec = timed(again)
            record(f"DNABERT-S attention {name} shape {shape_seed}", sec,
                   rel_err(out[:n_ref], ref), tflop=attn_flop(lens, dna_heads, 64),
                   first_call_ms=1000 * first,
                   note=f"first call {1000 * first:.1f} ms")  # fmt: skip


def _prefix(batch, n: int):
    """The batch's first n sequences as a batch of their own (for the slow reference)."""
    lengths = batch.lengths()[:n].tolist()
    return make_batch([np.zeros(m, dtype=np.int64) for m in lengths]).to(DEV)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    t, d, f = (args.tokens, 2560, 10240) if not args.quick else (512, 128, 512)
    info = {
        "bench": "kernels_check",
        "machine": h.machine_info(),
        "tokens": t,
        "dim": d,
        "ffn": f,
    }
    info["ceilings"] = ceilings(16384 if CUDA else 256)
    for part in (lambda: check_layer_norms(t, d), lambda: check_elementwise(t, d, f),
                 lambda: check_matmuls(t, d, f),
                 lambda: check_esm_attention(t, args.quick),
                 lambda: check_dnabert_attention(t, args.quick)):  # fmt: skip
        try:
            part()
        except Exception as e:  # noqa: BLE001 - report and go on with the other checks
            print(f"FAILED: {type(e).__name__}: {e}"[:2000], flush=True)
            ROWS.append(
                {"kernel": "error", "ms": 0.0, "note": f"{type(e).__name__}: {str(e)[:500]}"}
            )
        h.write_json(args.out, {**info, "rows": ROWS})
    print("\n".join(fmt(r) for r in ROWS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
