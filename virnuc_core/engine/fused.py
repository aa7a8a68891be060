"""Fused memory-bound kernels (Triton) for the packed models, each with a plain-PyTorch twin.

Between the matmuls of an ESM-2 layer the GPU only moves bytes: residual adds, LayerNorms, the
rotary embedding and GELU. ``torch.compile`` fused some of this but left the LayerNorms at
1.0-1.4 TB/s and every residual add, GELU and rotary pass as a separate trip through memory
(bench/results/README.md). The kernels here make each step one pass at bandwidth (GELU is in
fc1's cuBLASLt epilogue: :mod:`virnuc_core.engine.models.esm2_matmuls`):

- :func:`add_layer_norm`: ``x += y`` (the residual, in place) and ``h = LayerNorm(x)`` in one
  read of x and y, h in the model's dtype.
- :func:`rotary_qkv`: the rotary embedding applied in place to the q and k parts of the fused
  q/k/v projection (cos/sin tables in fp32, built once per batch).

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


def add_layer_norm_reference(x, y, weight, bias, eps: float, shift=None):
    """``x += y`` in place (when y is given), then LayerNorm of the new x, plus ``shift`` when
    given (an fp32 vector added to every row before normalising, not stored); fp32 inside."""
    if y is not None:
        x.copy_(x.float() + y.float())
    s = x.float() if shift is None else x.float() + shift.float()
    h = F.layer_norm(s, x.shape[-1:], weight.float(), bias.float(), eps)
    return x, h.to(x.dtype)


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


# ---------------------------------------------------------------------------- public functions


def add_layer_norm(x, y, weight, bias, eps: float, shift=None):
    """``x += y`` (skipped when y is None) and h = LayerNorm(x + shift): (x, h).

    x is updated in place (it is the residual stream, owned by the caller). One read of x and y
    and one write of x and h: 8 bytes per element in bf16; without y, a read of x and a write
    of h (4 bytes). ``shift`` (fp32, one value per column, or None) is added
    in registers only: the biases the residual stream has not been given yet (see
    :class:`virnuc_core.engine.models.esm2_matmuls.LinearOps`).
    """
    if not triton_ok(x):
        return add_layer_norm_reference(x, y, weight, bias, eps, shift)
    rows, cols = x.shape
    assert x.stride(1) == 1 and (y is None or y.stride(1) == 1)
    h = torch.empty_like(x)
    block = _block(cols)
    assert shift is None or (shift.dtype == torch.float32 and shift.is_contiguous())
    _add_ln_kernel[(rows,)](
        x, x if y is None else y, weight, bias, bias if shift is None else shift, h, cols,
        x.stride(0), x.stride(0) if y is None else y.stride(0), eps, HAS_Y=y is not None,
        HAS_SHIFT=shift is not None, BLOCK=block, num_warps=4 if block <= 4096 else 8,
    )  # fmt: skip  # warps: round 3 fused_sweep_h200.json (4 fastest for 2,560 columns)
    return x, h


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


# ---------------------------------------------------------------------------- Triton kernels

if HAVE_TRITON:

    @triton.jit
    def _add_ln_kernel(
        X, Y, W, B, SHIFT, H, cols, stride_x, stride_y, eps,
        HAS_Y: tl.constexpr, HAS_SHIFT: tl.constexpr, BLOCK: tl.constexpr,
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
