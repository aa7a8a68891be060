"""The DNABERT-S v1 reference: deliberately plain, and sharing no code with the packed path.

One sequence at a time, fp32, no attention mask (the original called ``model(ids)[0]`` on a
batch of one), an explicit (heads, L, L) ALiBi bias matrix and softmax(QK^T * scale + bias) V,
hand-written LayerNorm and erf-GELU. Weights come as the checkpoint's tensors by key name (see
:mod:`virnuc_core.engine.models.dnabert` for the architecture and the keys).
"""

from __future__ import annotations

import math

import torch

from virnuc_core.engine.models.dnabert_load import DnabertConfig


def _ref_slopes(n_heads: int) -> list[float]:
    """ALiBi slopes, written out as in the original (recursive for non-powers of two)."""
    if math.log2(n_heads).is_integer():
        first = 2.0 ** (-(2.0 ** -(math.log2(n_heads) - 3)))
        return [first ** (i + 1) for i in range(n_heads)]
    p = 2 ** math.floor(math.log2(n_heads))
    return _ref_slopes(p) + _ref_slopes(2 * p)[0::2][: n_heads - p]


def _ref_layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def reference_hidden(
    w: dict[str, torch.Tensor], cfg: DnabertConfig, ids: torch.Tensor
) -> torch.Tensor:
    """Last hidden states (L, hidden) of ONE sequence, fp32, explicit everything; ``w`` are the
    checkpoint tensors by key. Mirrors ``model(ids[None])[0][0]`` of the original (no mask)."""
    eps, heads = cfg.layer_norm_eps, cfg.num_attention_heads
    hd = cfg.hidden_size // heads
    n = ids.shape[0]
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _ref_layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    pos = torch.arange(n, device=ids.device, dtype=torch.float32)
    slopes = torch.tensor(_ref_slopes(heads), device=ids.device, dtype=torch.float32)
    bias = slopes[:, None, None] * -(pos[None, :] - pos[:, None]).abs()  # (heads, L, L)
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        qkv = x @ w[p + "attention.self.Wqkv.weight"].T + w[p + "attention.self.Wqkv.bias"]
        qkv = qkv.reshape(n, 3, heads, hd).permute(1, 2, 0, 3)  # (3, heads, L, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(1, 2) / math.sqrt(hd) + bias
        att = (torch.softmax(scores, dim=-1) @ v).permute(1, 0, 2).reshape(n, heads * hd)
        att = att @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        x = _ref_layer_norm(
            att + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = x @ w[p + "mlp.gated_layers.weight"].T
        inter = cfg.intermediate_size
        gated, plain = h[:, :inter], h[:, inter:]
        h = 0.5 * gated * (1.0 + torch.erf(gated / math.sqrt(2.0))) * plain
        h = h @ w[p + "mlp.wo.weight"].T + w[p + "mlp.wo.bias"]
        x = _ref_layer_norm(h + x, w[p + "mlp.layernorm.weight"], w[p + "mlp.layernorm.bias"], eps)
    return x
