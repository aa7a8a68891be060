"""Varlen attention over packed tokens in one Triton kernel, ALiBi optional (``triton`` backend).

One program per (sequence, block of queries, head): it reads the sequence's bounds from
``cu_seqlens``, streams that sequence's keys and values in blocks with an online softmax (the
flash-attention scheme), adds the symmetric ALiBi bias -slope * |i - j| from positions inside
the sequence when slopes are given, and writes its block of the output. No padding, no dense
layout, no bias tensor, nothing planned per batch shape: one compiled kernel (per head size,
dtype and ALiBi or not) serves every batch, which is what the DNABERT-S jobs need (every batch
of a job has a new shape; the ``padded`` backend paid per new shape).
"""

from __future__ import annotations

import torch

from virnuc_core.engine.fused import INTERPRET, triton_ok

LOG2E = 1.4426950408889634

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the CPU machines have no Triton: callers fall back
    triton = None


def head_dim_fits(hd: int) -> bool:
    """Whether the kernel takes heads of ``hd`` values: a power of two, 16 to 256 (tl.dot needs
    at least 16 along the reduced dimension)."""
    return 16 <= hd <= 256 and hd & (hd - 1) == 0


def varlen_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float,
    slopes: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale - slope * |i - j|) v within each sequence; (T, heads, hd) in and out.

    q, k, v may be strided views (e.g. of one fused q/k/v projection); the last dim must be
    contiguous and its size a power of two (16..256).
    """
    tokens, heads, hd = q.shape
    if not head_dim_fits(hd):
        raise ValueError(f"the triton attention kernel takes head sizes 16, 32, .. 256, not {hd}")
    if not triton_ok(q):
        raise RuntimeError("the triton attention backend needs CUDA (or TRITON_INTERPRET=1)")
    out = torch.empty(tokens, heads, hd, device=q.device, dtype=q.dtype)
    n = cu_seqlens.numel() - 1
    if tokens == 0:
        return out
    alibi = slopes is not None
    s = slopes.to(q.device, torch.float32).contiguous() if alibi else cu_seqlens

    def grid(meta):
        return (n, triton.cdiv(max_seqlen, meta["BLOCK_M"]), heads)

    _attention_kernel[grid](
        q, k, v, out, cu_seqlens, s,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), float(scale) * LOG2E,
        HAS_ALIBI=alibi, HEAD_DIM=hd, FP32=q.dtype == torch.float32,
    )  # fmt: skip
    return out


def _configs() -> list:
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    # short sequences (DNABERT-S ~60-140 tokens, ESM-2 ~40-170): small blocks waste less
    shapes = [(64, 64, 4, 2), (128, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 2), (128, 32, 4, 2)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
        for m, n, w, s in shapes
    ]


if triton is not None:

    @triton.jit
    def _dot(a, b, FP32: tl.constexpr):
        if FP32:
            return tl.dot(a, b, input_precision="ieee")
        return tl.dot(a, b)

    @triton.autotune(configs=_configs(), key=["HEAD_DIM", "HAS_ALIBI", "FP32"])
    @triton.jit
    def _attention_kernel(
        Q, K, V, Out, CU, SLOPES,
        sqt, sqh, skt, skh, svt, svh, sot, soh, qk_scale,
        HAS_ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr,
        FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        # Branches on constexprs are resolved when compiling: a kernel has one of them.
        seq, head = tl.program_id(0), tl.program_id(2)
        start = tl.load(CU + seq)
        length = tl.load(CU + seq + 1) - start
        m0 = tl.program_id(1) * BLOCK_M
        if m0 >= length:  # this sequence is shorter than the longest one of the batch
            return
        start = start.to(tl.int64)
        rows = m0 + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        d = tl.arange(0, HEAD_DIM)
        qm = rows[:, None] < length
        q = tl.load(Q + (start + rows)[:, None] * sqt + head * sqh + d[None, :], mask=qm, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        slope = 0.0
        if HAS_ALIBI:
            slope = tl.load(SLOPES + head) * 1.4426950408889634  # in the exp2 domain
        for n0 in range(0, length, BLOCK_N):
            cols = n0 + offs_n
            valid = cols < length
            km = valid[None, :]
            k = tl.load(K + (start + cols)[None, :] * skt + head * skh + d[:, None], mask=km,
                        other=0.0)  # fmt: skip
            s = _dot(q, k, FP32) * qk_scale
            if HAS_ALIBI:
                s -= slope * tl.abs(rows[:, None] - cols[None, :]).to(tl.float32)
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(V + (start + cols)[:, None] * svt + head * svh + d[None, :],
                        mask=valid[:, None], other=0.0)  # fmt: skip
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, FP32)
            m_i = m_new
        out = acc / l_i[:, None]
        o_ptr = Out + (start + rows)[:, None] * sot + head * soh + d[None, :]
        tl.store(o_ptr, out.to(Out.dtype.element_ty), mask=rows[:, None] < length)
