"""Fused memory-bound kernels (Triton) for the packed models, each with a plain-PyTorch twin.

Between the matmuls of an ESM-2 layer the GPU only moves bytes: residual adds, LayerNorms, the
rotary embedding, GELU and (for fp8) quantisation. ``torch.compile`` fuses some of this but left
the LayerNorms at 1.0-1.4 TB/s and every residual add, GELU and rotary pass as a separate trip
through memory (bench/results/README.md). The kernels here make each step one pass at bandwidth:

- :func:`add_layer_norm`: ``x += y`` (the residual, in place) and ``h = LayerNorm(x)`` in one
  read of x and y; h in the model's dtype, or fp8 e4m3 with one scale per row (the next
  matmul's input, quantised while the row is still in registers).
- :func:`rotary_qkv`: the rotary embedding applied in place to the q and k parts of the fused
  q/k/v projection (cos/sin tables in fp32, built once per batch).
- :func:`gelu` (erf form, in place) and :func:`quantize_rows` (optionally GELU first): one pass
  each; the fp8 versions write e4m3 values and per-row scales.

Every function falls back to its ``*_reference`` twin (the same maths in PyTorch, fp32 inside)
where Triton cannot run: no Triton, or CPU tensors (unless ``TRITON_INTERPRET=1``, Triton's CPU
interpreter, which the tests use). The references are what the CPU tests check the kernels and
the model against.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
import torch.nn.functional as F

HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # largest finite e4m3fn value
SCALE_FLOOR = 1e-12  # an all-zero row gets this scale (its values quantise to 0 exactly)

if HAVE_TRITON:
    import triton
    import triton.language as tl


def triton_ok(*tensors: torch.Tensor) -> bool:
    """Whether the Triton kernels run on these tensors: CUDA with bf16 matrix units (compute
    capability 8.0 or newer), or the CPU interpreter."""
    if not HAVE_TRITON:
        return False
    return all((t.is_cuda and _capable(t.device.index)) or INTERPRET for t in tensors)


@functools.cache
def _capable(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index) >= (8, 0)


def _block(n: int) -> int:
    return max(16, 1 << (int(n) - 1).bit_length())


# ---------------------------------------------------------------------------- references


def quantize_rows_reference(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 values, (rows, 1) fp32 scales) with ``a ~= values * scale``, scale = amax / 448."""
    a32 = a.float()
    scale = a32.abs().amax(-1, keepdim=True).clamp_min(SCALE_FLOOR) / E4M3_MAX
    return (a32 / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def add_layer_norm_reference(x, y, weight, bias, eps: float, fp8: bool = False, shift=None):
    """``x += y`` in place (when y is given), then LayerNorm of the new x, plus ``shift`` when
    given (an fp32 vector added to every row before normalising, not stored); fp32 inside."""
    if y is not None:
        x.copy_(x.float() + y.float())
    s = x.float() if shift is None else x.float() + shift.float()
    h = F.layer_norm(s, x.shape[-1:], weight.float(), bias.float(), eps)
    return x, (quantize_rows_reference(h) if fp8 else h.to(x.dtype))


def rotary_tables(positions: torch.Tensor, inv_freq: torch.Tensor):
    """cos, sin of position x inverse frequency: (T, head_dim / 2) fp32 each."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    return freqs.cos().contiguous(), freqs.sin().contiguous()


def rotary_qkv_reference(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """fair-esm's rotary on q and k of ``qkv`` (T, 3 * heads * hd), in place; (q, k, v) views."""
    t = qkv.view(qkv.shape[0], 3, heads, -1)
    half = t.shape[-1] // 2
    c, s = cos[:, None, None, :], sin[:, None, None, :]
    x1, x2 = t[:, :2, :, :half].float(), t[:, :2, :, half:].float()  # views when fp32
    t[:, :2] = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(qkv.dtype)
    return t[:, 0], t[:, 1], t[:, 2]


def gelu_reference(u: torch.Tensor) -> torch.Tensor:
    """erf GELU in place (fp32 inside)."""
    return u.copy_(F.gelu(u.float()))


# ---------------------------------------------------------------------------- public functions


def add_layer_norm(x, y, weight, bias, eps: float, fp8: bool = False, shift=None):
    """``x += y`` (skipped when y is None) and h = LayerNorm(x + shift): (x, h) or (x, (h8, scale)).

    x is updated in place (it is the residual stream, owned by the caller). One read of x and y
    and one write of x and h: 8 bytes per element in bf16, 7 with an fp8 h; without y, a read
    of x and a write of h (4 bytes). ``shift`` (fp32, one value per column, or None) is added
    in registers only: the biases the residual stream has not been given yet (see
    :class:`virnuc_core.engine.models.esm2_matmuls.LinearOps`).
    """
    if not triton_ok(x):
        return add_layer_norm_reference(x, y, weight, bias, eps, fp8, shift)
    rows, cols = x.shape
    assert x.stride(1) == 1 and (y is None or y.stride(1) == 1)
    if fp8:
        h = torch.empty(rows, cols, device=x.device, dtype=E4M3)
        scale = torch.empty(rows, 1, device=x.device, dtype=torch.float32)
    else:
        h, scale = torch.empty_like(x), x  # scale unused
    block = _block(cols)
    assert shift is None or (shift.dtype == torch.float32 and shift.is_contiguous())
    _add_ln_kernel[(rows,)](
        x, x if y is None else y, weight, bias, bias if shift is None else shift, h, scale, cols,
        x.stride(0), x.stride(0) if y is None else y.stride(0), eps, HAS_Y=y is not None,
        HAS_SHIFT=shift is not None, FP8=fp8, BLOCK=block, num_warps=4 if block <= 4096 else 8,
    )  # fmt: skip  # warps: round 3 fused_sweep_h200.json (4 fastest for 2,560 columns)
    return x, ((h, scale) if fp8 else h)


def rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int):
    """Rotary on the q and k parts of ``qkv`` (T, 3 * heads * hd) in place; (q, k, v) views,
    each (T, heads, hd)."""
    if not triton_ok(qkv):
        return rotary_qkv_reference(qkv, cos, sin, heads)
    tokens, width = qkv.shape
    hd = width // (3 * heads)
    assert qkv.stride(1) == 1 and cos.is_contiguous() and sin.is_contiguous()
    rows = tokens * 2 * heads  # one row: one head of q or k of one token, hd values
    block_r = 64
    _rotary_kernel[(triton.cdiv(rows, block_r),)](
        qkv, cos, sin, rows, qkv.stride(0),
        CHUNKS=2 * heads, HALF=hd // 2, BLOCK_R=block_r, num_warps=4,
    )  # fmt: skip
    t = qkv.view(tokens, 3, heads, hd)
    return t[:, 0], t[:, 1], t[:, 2]


def gelu(u: torch.Tensor) -> torch.Tensor:
    """erf GELU of ``u``, in place."""
    if not triton_ok(u):
        return gelu_reference(u)
    assert u.is_contiguous()
    n = u.numel()
    # 4,096 a program, 4 warps: the fastest in
    # bench/results/2026-12-03-round3-h200/fused_sweep_h200.json
    _gelu_kernel[(triton.cdiv(n, 4096),)](u, n, BLOCK=4096, num_warps=4)
    return u


def quantize_rows(a: torch.Tensor, apply_gelu: bool = False):
    """(e4m3 values, (rows, 1) fp32 scales) of ``a`` (or of GELU(a)), one scale per row."""
    if not triton_ok(a):
        return quantize_rows_reference(F.gelu(a.float()) if apply_gelu else a)
    a = a if a.stride(-1) == 1 else a.contiguous()
    rows, cols = a.shape
    q = torch.empty(rows, cols, device=a.device, dtype=E4M3)
    scale = torch.empty(rows, 1, device=a.device, dtype=torch.float32)
    block = min(2048, _block(cols))
    _quant_rows_kernel[(rows,)](
        a, q, scale, cols, a.stride(0), GELU=apply_gelu, BLOCK=block, num_warps=8
    )
    return q, scale


# ---------------------------------------------------------------------------- Triton kernels

if HAVE_TRITON:

    @triton.jit
    def _erf_gelu(v):
        return 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))

    @triton.jit
    def _add_ln_kernel(
        X, Y, W, B, SHIFT, H, S, cols, stride_x, stride_y, eps,
        HAS_Y: tl.constexpr, HAS_SHIFT: tl.constexpr, FP8: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        # One row per program; the whole row stays in registers between the passes.
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        mask = offs < cols
        x = tl.load(X + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:
            x += tl.load(Y + row * stride_y + offs, mask=mask, other=0.0).to(tl.float32)
            xr = x.to(X.dtype.element_ty)
            tl.store(X + row * stride_x + offs, xr, mask=mask)
            x = xr.to(tl.float32)  # normalise the residual stream exactly as stored
        if HAS_SHIFT:
            x += tl.load(SHIFT + offs, mask=mask, other=0.0)
        mean = tl.sum(x, axis=0) / cols
        d = tl.where(mask, x - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(d * d, axis=0) / cols + eps)
        w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
        h = d * rstd * w + b  # masked lanes: 0
        if FP8:
            scale = tl.maximum(tl.max(tl.abs(h), axis=0), 1e-12) / 448.0
            tl.store(H + row * cols + offs, (h / scale).to(H.dtype.element_ty), mask=mask)
            tl.store(S + row, scale)
        else:
            tl.store(H + row * cols + offs, h.to(H.dtype.element_ty), mask=mask)

    @triton.jit
    def _rotary_kernel(
        QKV, COS, SIN, rows, stride_t,
        CHUNKS: tl.constexpr, HALF: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        # Row r: token r // CHUNKS, head-chunk r % CHUNKS of q then k (contiguous in the token's
        # row of qkv); its first HALF values rotate with the HALF after them. A (rows, HALF)
        # tile keeps the loads contiguous along HALF.
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        i = tl.arange(0, HALF)
        mask = (r < rows)[:, None]
        t = (r // CHUNKS).to(tl.int64)
        base = QKV + (t * stride_t + (r % CHUNKS) * (2 * HALF))[:, None] + i[None, :]
        x1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
        cs = t[:, None] * HALF + i[None, :]
        c = tl.load(COS + cs, mask=mask, other=0.0)
        s = tl.load(SIN + cs, mask=mask, other=0.0)
        tl.store(base, (x1 * c - x2 * s).to(QKV.dtype.element_ty), mask=mask)
        tl.store(base + HALF, (x2 * c + x1 * s).to(QKV.dtype.element_ty), mask=mask)

    @triton.jit
    def _gelu_kernel(U, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        v = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(U + offs, _erf_gelu(v).to(U.dtype.element_ty), mask=mask)

    @triton.jit
    def _quant_rows_kernel(A, Q, S, cols, stride_a, GELU: tl.constexpr, BLOCK: tl.constexpr):
        # Two sweeps over the row: its amax, then the scaled values (the second sweep reads
        # the row again, from L2: a 10,240-wide bf16 row is 20 KB).
        row = tl.program_id(0).to(tl.int64)
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, cols, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            v = tl.load(A + row * stride_a + offs, mask=offs < cols, other=0.0).to(tl.float32)
            if GELU:
                v = _erf_gelu(v)
            amax = tl.maximum(amax, tl.abs(v))
        scale = tl.maximum(tl.max(amax, axis=0), 1e-12) / 448.0
        tl.store(S + row, scale)
        for start in range(0, cols, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < cols
            v = tl.load(A + row * stride_a + offs, mask=mask, other=0.0).to(tl.float32)
            if GELU:
                v = _erf_gelu(v)
            tl.store(Q + row * cols + offs, (v / scale).to(Q.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------- matmul + GELU


def linear_gelu_reference(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """GELU(h @ weight.T + bias): the matmul (cuBLAS on a GPU), then GELU in place."""
    return gelu(F.linear(h, weight, bias))


def linear_gelu(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(h @ weight.T + bias) in one Triton matmul, bias and GELU in its epilogue.

    Saves the separate GELU pass (a read and a write of the (T, ffn) activation) if the Triton
    matmul keeps up with cuBLAS; bench/esm2_levers.py measures whether it does. Falls back to
    :func:`linear_gelu_reference` where Triton cannot run or K is not a multiple of 64.
    """
    tokens, k = h.shape
    n = weight.shape[0]
    if not triton_ok(h) or k % 64 or h.stride(1) != 1 or not weight.is_contiguous():
        return linear_gelu_reference(h, weight, bias)
    from triton.tools.tensor_descriptor import TensorDescriptor

    out = torch.empty(tokens, n, device=h.device, dtype=h.dtype)
    dummy = [16, 16]  # block shapes are set per config by _set_blocks
    descs = [TensorDescriptor.from_tensor(t, dummy) for t in (h, weight, out)]

    def grid(meta):
        return (triton.cdiv(tokens, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _mm_bias_gelu_kernel[grid](*descs, bias, tokens, n, k)
    return out


def _set_blocks(nargs: dict) -> None:
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["a_desc"].block_shape = [bm, bk]
    nargs["w_desc"].block_shape = [bn, bk]
    nargs["c_desc"].block_shape = [bm, bn]


def _mm_configs() -> list:
    if INTERPRET:
        shapes = [(32, 32, 32, 1, 1)]
    else:  # (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps): usual H100 bf16 shapes
        shapes = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 8),
                  (256, 128, 64, 3, 8), (256, 128, 64, 4, 8), (128, 128, 64, 4, 4)]  # fmt: skip
    return [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
            num_stages=s,
            num_warps=w,
            pre_hook=_set_blocks,
        )  # fmt: skip
        for m, n, k, s, w in shapes
    ]


if HAVE_TRITON:

    @triton.autotune(configs=_mm_configs(), key=["N", "K"])
    @triton.jit
    def _mm_bias_gelu_kernel(
        a_desc, w_desc, c_desc, BIAS, M, N, K,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ):  # fmt: skip
        # Tiles in groups of GROUP_M rows of tiles, so that neighbouring programs share the
        # weight tiles in L2; tensor-memory-accelerator loads (out-of-range rows read as 0).
        pid = tl.program_id(0)
        grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        width = GROUP_M * grid_n
        first_m = (pid // width) * GROUP_M
        size_m = tl.minimum(grid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % width) % size_m
        pid_n = (pid % width) // size_m
        off_m, off_n = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            a = a_desc.load([off_m, k])
            w = w_desc.load([off_n, k])
            acc = tl.dot(a, w.T, acc)
        cols = off_n + tl.arange(0, BLOCK_N)
        acc += tl.load(BIAS + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        c_desc.store([off_m, off_n], _erf_gelu(acc).to(c_desc.dtype))
