"""Varlen attention over packed tokens: one function, backends chosen once per process.

Backends (``attention_backend`` in the config; ``auto`` picks the first that applies, in the
order ``triton``, ``flash``, then ``padded`` for ALiBi or ``varlen``; CPU: ``loop``):

- ``flash``: the flash-attn package's varlen kernel (CUDA, when installed; ALiBi supported).
- ``varlen``: PyTorch's built-in varlen flash attention (CUDA; no bias, so not for ALiBi).
- ``triton``: this project's Triton kernel over the packed tokens
  (:mod:`virnuc_core.engine.triton_attention`; CUDA with Triton; ALiBi computed inside the kernel,
  no bias tensor, no padding, nothing planned per batch shape).
- ``padded``: unpack to a dense (n, max_len) batch and run SDPA with an additive bias; exact,
  and fast where sequences are short and of similar length. SDPA is held to its
  memory-efficient kernel (``PADDED_SDPA``): left to choose, it may take cuDNN's, which plans
  once per new (sequences, length) shape, and every batch of a job has a new shape.
- ``loop``: one SDPA call per sequence with an explicit bias; correct and slow, the CPU fallback.

All take q, k, v as (T, heads, head_dim) over the packed tokens and return (T, heads, head_dim).
ALiBi here is the symmetric, non-causal form: score(i, j) -= slope[h] * |i - j|, with i and j
positions inside one sequence, so relative distances never cross a sequence boundary.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from virnuc_core.engine.packing import PackedBatch

log = logging.getLogger("virnuc.attention")

BACKENDS = ("auto", "flash", "varlen", "triton", "padded", "loop")
RESOLVED = BACKENDS[1:]  # what choose_backend returns: the encoders take one of these
# SDPA kernels the padded backend may use, in order; None lets SDPA choose (benches compare).
PADDED_SDPA_DEFAULT = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
PADDED_SDPA: list | None = PADDED_SDPA_DEFAULT


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al.): a geometric series; non-powers of two interleave."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


@functools.cache
def choose_backend(requested: str, device_type: str, alibi: bool) -> str:
    """Resolve ``requested`` for this device and bias need; logged once per combination."""
    if requested not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {requested!r}")
    if device_type != "cuda":
        chosen = "loop" if requested in ("auto", "flash", "varlen", "triton") else requested
    elif requested != "auto":
        chosen = requested
    elif importlib.util.find_spec("triton") is not None:
        # measured on an H200 (bench/results/README.md, round 2): ESM-2 3B attention 0.73 vs
        # 1.40 ms a layer for PyTorch's varlen flash; DNABERT-S 0.25 vs 1.3-1.5 ms for padded
        chosen = "triton"
    elif importlib.util.find_spec("flash_attn") is not None:
        chosen = "flash"
    else:
        chosen = "padded" if alibi else "varlen"
    if chosen == "varlen" and alibi:
        raise ValueError(
            "the 'varlen' backend has no bias input; use flash, triton or padded for ALiBi"
        )
    log.info(
        "attention backend: %s (requested %s, device %s, alibi %s)",
        chosen,
        requested,
        device_type,
        alibi,
    )
    return chosen


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: PackedBatch,
    backend: str,
    slopes: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention within each packed sequence; ``slopes`` (heads,) turns on ALiBi."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "flash":
        return _flash(q, k, v, batch, slopes, scale)
    if backend == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        cu = batch.cu_seqlens
        return varlen_attn(q, k, v, cu, cu, batch.max_seqlen, batch.max_seqlen, scale=scale)
    if backend == "triton":
        return _triton(q, k, v, batch, slopes, scale)
    if backend == "padded":
        return _padded(q, k, v, batch, slopes, scale)
    if backend == "loop":
        return _loop(q, k, v, batch, slopes, scale)
    raise ValueError(f"unknown attention backend {backend!r}")


def _flash(q, k, v, batch, slopes, scale):
    from flash_attn import flash_attn_varlen_func

    cu, m = batch.cu_seqlens, batch.max_seqlen
    s = None if slopes is None else slopes.to(q.device, torch.float32)
    return flash_attn_varlen_func(q, k, v, cu, cu, m, m, softmax_scale=scale, alibi_slopes=s)


def _triton(q, k, v, batch, slopes, scale):
    from virnuc_core.engine.fused import triton_ok
    from virnuc_core.engine.triton_attention import head_dim_fits, varlen_attention_triton

    # CPU without the interpreter, or heads too small for the kernel (the tiny test models):
    # the same semantics, one SDPA per sequence
    if not triton_ok(q) or not head_dim_fits(q.shape[-1]):
        return _loop(q, k, v, batch, slopes, scale)
    return varlen_attention_triton(q, k, v, batch.cu_seqlens, batch.max_seqlen, scale, slopes)


def _alibi_bias(slopes: torch.Tensor, length: int, device) -> torch.Tensor:
    """(heads, L, L) additive bias -slope * |i - j|."""
    pos = torch.arange(length, device=device)
    dist = (pos[None, :] - pos[:, None]).abs().to(torch.float32)
    return -slopes.to(device, torch.float32)[:, None, None] * dist


def _loop(q, k, v, batch, slopes, scale):
    out = torch.empty_like(q)
    bounds = batch.cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        qi, ki, vi = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (H, L, D)
        bias = None if slopes is None else _alibi_bias(slopes, end - start, q.device).to(q.dtype)
        oi = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=bias, scale=scale)
        out[start:end] = oi.transpose(0, 1)
    return out


def _padded_layout(batch: PackedBatch, slopes, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index of each token in a dense (n * max_len) layout, and the additive bias
    (padded keys -inf, plus ALiBi): built once per batch, shared by every layer."""
    key = ("padded", dtype, slopes is not None)
    if key not in batch.cache:
        n, m = batch.num_seqs, batch.max_seqlen
        index = batch.seq_ids * m + batch.positions
        keep = torch.zeros(n * m, dtype=torch.bool, device=index.device)
        keep[index] = True
        bias = torch.zeros(n, 1, 1, m, dtype=dtype, device=index.device)
        bias.masked_fill_(~keep.view(n, 1, 1, m), float("-inf"))
        if slopes is not None:
            bias = bias + _alibi_bias(slopes, m, index.device).to(dtype)[None]
        batch.cache[key] = (index, bias)
    return batch.cache[key]


def _padded(q, k, v, batch, slopes, scale):
    n, m = batch.num_seqs, batch.max_seqlen
    heads, dim = q.shape[1], q.shape[2]
    index, bias = _padded_layout(batch, slopes, q.dtype)

    def dense(t):
        buf = t.new_zeros(n * m, heads, dim).index_copy_(0, index, t)
        return buf.view(n, m, heads, dim).transpose(1, 2)  # (n, H, m, D)

    # Padded queries see real keys only (no NaN) and are dropped by the gather below.
    qd, kd, vd = dense(q), dense(k), dense(v)
    if PADDED_SDPA is None:
        out = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=bias, scale=scale)
    else:
        with sdpa_kernel(PADDED_SDPA):
            out = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=bias, scale=scale)
    return out.transpose(1, 2).reshape(n * m, heads, dim).index_select(0, index)
