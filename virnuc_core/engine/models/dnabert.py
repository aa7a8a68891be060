"""DNABERT-S embeddings: a packed (varlen) inference engine and a plain v1-style reference.

No remote code: the architecture is re-implemented here from the facts below.

Architecture (DNABERT-S = DNABERT-2-117M's MosaicBERT variant, contrastively re-trained).
Sources read: MAGICS-LAB/DNABERT_S ``evaluate/model_codes/bert_layers.py`` and
``evaluate/model_codes/config.json``, ``train/pretrain/models/dnabert_s.py`` and
``train/pretrain/training.py``; mosaicml/examples ``examples/benchmarks/bert/src/bert_layers.py``
and ``.../configuration_bert.py``; MAGICS-LAB/DNABERT_2 issue #81 (special tokens).

- config: vocab 4096, hidden 768, 12 layers, 12 heads (head_dim 64), intermediate 3072,
  type_vocab_size 2, layer_norm_eps 1e-12, attention dropout 0; ``hidden_act`` is only used by
  the MLM head (the encoder's GELU is hard-coded).
- embeddings: word_embeddings(ids) + token_type_embeddings(type 0 for every token; the model is
  called without token_type_ids, which default to zeros) -> LayerNorm -> dropout. No position
  embeddings (ALiBi).
- attention: ``Wqkv`` is one Linear(h, 3h) with bias; its output splits as (3, heads, head_dim),
  i.e. columns [q | k | v], each head-major. scores = q k^T / sqrt(head_dim) + bias, softmax,
  times v. bias = ALiBi + attention mask, where ALiBi = -slope[h] * |i - j| (symmetric,
  non-causal) and the mask adds -10000 at padded keys (none for a batch of one).
- ALiBi slopes (Press et al.): for a power of two n, start = 2^(-2^-(log2 n - 3)) and
  slope_k = start^(k+1); otherwise the power-of-two series for the nearest lower power p, then
  every other slope of the 2p series, first n - p of them. For 12 heads: 2^-1, 2^-2, ..., 2^-8,
  then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
- post-LN blocks: a = LayerNorm(dense(attn) + x) (``attention.output``); the gated-linear-unit MLP
  then h = gated_layers(a) (Linear(h, 2 * intermediate), no bias); GELU (exact, erf form) of the
  FIRST ``intermediate`` columns times the SECOND half; out = layernorm(wo(.) + a).
- unpadding: the encoder removes padded tokens (``unpad_input`` -> cu_seqlens) before the layers,
  pads per layer only inside attention, and pads back at the end; ``model(input_ids)[0]`` is the
  last layer's hidden states, (batch, seq_len, 768), padded back. The pooler (dense + tanh of
  [CLS]) is not used for embeddings. Dropout is inactive at inference.
- tokenizer: BPE (vocab 4096); ``tokenizer(seq)["input_ids"]`` adds [CLS] and [SEP] (DNABERT-2 was
  trained with them, issue #81); ids are read from the folder's tokenizer.json, never assumed.
- pooling in the original pipeline: mean of ``model(ids)[0][0]`` over every token, [CLS] and [SEP]
  included (spec section 3); reproduced here for both paths.

State-dict keys (a ``BertModel.save_pretrained`` file such as DNABERT-S has them without a prefix;
a ``BertForMaskedLM`` file such as DNABERT-2-117M has ``bert.`` before each; both load)::

    embeddings.word_embeddings.weight              (vocab, h)
    embeddings.token_type_embeddings.weight        (2, h)
    embeddings.LayerNorm.{weight,bias}             (h,)
    encoder.layer.N.attention.self.Wqkv.{weight,bias}       (3h, h), (3h,)
    encoder.layer.N.attention.output.dense.{weight,bias}    (h, h), (h,)
    encoder.layer.N.attention.output.LayerNorm.{weight,bias}
    encoder.layer.N.mlp.gated_layers.weight        (2 * intermediate, h)   no bias
    encoder.layer.N.mlp.wo.{weight,bias}           (h, intermediate), (h,)
    encoder.layer.N.mlp.layernorm.{weight,bias}
    ignored if present: pooler.*, cls.predictions.* (MLM head), classifier.*, buffers.

The packed path (:meth:`DnabertEncoder.embed_packed`) runs the layers over a
:class:`~virnuc_core.engine.packing.PackedBatch` and calls
:func:`virnuc_core.engine.attention.varlen_attention`
with the ALiBi slopes (positions restart at every sequence). The reference path
(:meth:`DnabertEncoder.reference_embed`) is deliberately plain and shares no attention code with
it (:mod:`virnuc_core.engine.models.dnabert_reference`): one sequence at a time, fp32, an explicit
bias matrix and softmax(QK^T * scale + bias) V.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virnuc_core.engine.attention import RESOLVED, alibi_slopes, varlen_attention
from virnuc_core.engine.compiling import TokenwiseCompiled
from virnuc_core.engine.models.building import no_weight_init
from virnuc_core.engine.models.dnabert_load import (
    DnabertConfig,
    DnaTokenizer,
    read_folder,
    resolve_folder,
    weights_checksum,
)
from virnuc_core.engine.models.dnabert_reference import _ref_slopes, reference_hidden  # noqa: F401
from virnuc_core.engine.packing import PackedBatch, segment_mean
from virnuc_core.util.digests import tensors_sha256

log = logging.getLogger("virnuc.dnabert")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------- packed model
# Module names mirror the checkpoint keys so that load_state_dict(strict=True) checks them.


class _Embeddings(nn.Module):
    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(ids) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    """Holds ``Wqkv`` (named ``self`` in the checkpoint, hence this little wrapper)."""

    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)


class _Output(nn.Module):
    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _Output(cfg)


class _Mlp(nn.Module):
    """The gated MLP's weights (the checkpoint's names). Its forward (the padded path of
    ``bench/dnabert_throughput.py``) and :func:`_post_attention` (the encoder's path) both
    compute it with :func:`_gated_mlp`."""

    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.gated_layers = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.inter = cfg.intermediate_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ln = self.layernorm
        return _gated_mlp(
            x, self.gated_layers.weight, self.wo.weight, self.wo.bias, ln.weight, ln.bias,
            self.inter, ln.eps,
        )  # fmt: skip


def _gated_mlp(x, gate_w, wo_w, wo_b, ln_w, ln_b, inter: int, eps: float):
    """Gated MLP, residual + LayerNorm. ``gate_w[:inter]`` is the gated half: computing the two
    halves as separate products (contiguous row blocks of the weight) keeps the elementwise work
    vectorised."""
    h = F.gelu(F.linear(x, gate_w[:inter])).mul_(F.linear(x, gate_w[inter:]))
    return F.layer_norm(F.linear(h, wo_w, wo_b) + x, x.shape[-1:], ln_w, ln_b, eps)


def _post_attention(a, x, params, inter: int, eps: float):
    """Output projection, residual + LayerNorm, gated MLP, residual + LayerNorm, as one function
    of plain tensors so that ``torch.compile`` makes one graph shared by every layer."""
    dense_w, dense_b, ln1_w, ln1_b, gate_w, wo_w, wo_b, ln2_w, ln2_b = params
    x = F.layer_norm(F.linear(a, dense_w, dense_b) + x, x.shape[-1:], ln1_w, ln1_b, eps)
    return _gated_mlp(x, gate_w, wo_w, wo_b, ln2_w, ln2_b, inter, eps)


class _Layer(nn.Module):
    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.attention = _Attention(cfg)
        self.mlp = _Mlp(cfg)
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.layer_norm_eps

    def post_params(self) -> tuple[torch.Tensor, ...]:
        out, mlp = self.attention.output, self.mlp
        return (
            out.dense.weight,
            out.dense.bias,
            out.LayerNorm.weight,
            out.LayerNorm.bias,
            mlp.gated_layers.weight,
            mlp.wo.weight,
            mlp.wo.bias,
            mlp.layernorm.weight,
            mlp.layernorm.bias,
        )

    def forward(self, x, batch: PackedBatch, backend: str, slopes, post=_post_attention):
        t = x.shape[0]
        qkv = self.attention.self.Wqkv(x).view(t, 3, self.heads, self.head_dim)
        q, k, v = qkv.unbind(1)
        a = varlen_attention(q, k, v, batch, backend, slopes=slopes)
        return post(a.reshape(t, -1), x, self.post_params(), self.mlp.inter, self.eps)


class _Encoder(nn.Module):
    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class DnabertModel(nn.Module):
    """The DNABERT-S encoder over packed tokens; parameters named as in the checkpoint."""

    def __init__(self, cfg: DnabertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.register_buffer("slopes", alibi_slopes(cfg.num_attention_heads), persistent=False)
        self.post = _post_attention  # replaced by a compiled version with ``compile``

    def forward(self, batch: PackedBatch, backend: str) -> torch.Tensor:
        """Last hidden states of every packed token, (T, hidden)."""
        x = self.embeddings(batch.input_ids)
        for layer in self.encoder.layer:
            x = layer(x, batch, backend, self.slopes, self.post)
        return x


# ------------------------------------------------------------------------------- encoder


class DnabertEncoder:
    """DNABERT-S per the encoder contract (see ``.devnotes/ENCODER_CONTRACT.md``)."""

    name = "dnabert"

    def __init__(
        self,
        spec: str,
        cfg: DnabertConfig,
        weights: dict[str, torch.Tensor],
        tokenizer: DnaTokenizer,
        device: torch.device,
        precision: str,
        backend: str,
        source: str = "",
        compile: bool = False,
        weights_checksum: tuple[str, str] | None = None,  # [models] (sha256, of what)
    ):
        """``precision``, ``backend`` (one of :data:`~virnuc_core.engine.attention.RESOLVED`
        that takes ALiBi) and ``compile`` as the caller resolved them for ``device``
        (:func:`virnuc_core.registry.load_encoder`: fp32 and eager on the CPU)."""
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
        if backend not in RESOLVED or backend == "varlen":
            raise ValueError(f"DNABERT-S's attention backend must be one of {RESOLVED} but "
                             f"'varlen' (no ALiBi), resolved, got {backend!r}")  # fmt: skip
        self.spec, self.cfg, self.tokenizer, self.source = spec, cfg, tokenizer, source
        self.device = device
        self.dim = cfg.hidden_size
        self.precision, self.dtype, self.backend = precision, DTYPES[precision], backend
        with no_weight_init():  # every parameter is set from ``weights`` (strict)
            self.model = DnabertModel(cfg)
        self.model.load_state_dict(weights, strict=True)  # a copy: nothing maps the file later
        self.model.to(device=device, dtype=self.dtype).eval().requires_grad_(False)
        self.model.slopes = alibi_slopes(cfg.num_attention_heads).to(device)  # stays fp32
        self.compiled = bool(compile)
        if self.compiled:  # fuses GELU * gate, residual adds and LayerNorms; attention stays eager
            self.model.post = TokenwiseCompiled(_post_attention, token_args=(0, 1))
        # The fp32 reference reuses the packed model's tensors when those are fp32 already.
        self._cpu_weights = None if self.dtype == torch.float32 else weights
        self._ref_weights: dict[str, torch.Tensor] | None = None
        # [models] the weights file(s)' sha256 from load(), or a hash of the tensors (tiny, benches)
        self.weights_sha256, self.weights_of = weights_checksum or (
            tensors_sha256(weights),
            "tensors (built in code)",
        )

    def tokenize(self, seqs: list[str]) -> list[np.ndarray]:
        """int64 ids per sequence, [CLS] ... [SEP] included."""
        return self.tokenizer(seqs)

    @torch.inference_mode()
    def embed_packed(self, batch: PackedBatch) -> torch.Tensor:
        """(n, dim) float32: mean of the last hidden states over every token of each sequence."""
        hidden = self.model(batch, self.backend)
        ones = torch.ones_like(batch.seq_ids, dtype=torch.float32)
        return segment_mean(hidden, batch.seq_ids, ones, batch.num_seqs)

    def _reference_weights(self) -> dict[str, torch.Tensor]:
        if self._ref_weights is None:
            if self._cpu_weights is None:
                self._ref_weights = dict(self.model.state_dict())
            else:
                self._ref_weights = {
                    k: v.to(self.device, torch.float32) for k, v in self._cpu_weights.items()
                }
        return self._ref_weights

    @torch.inference_mode()
    def reference_embed_ids(self, token_lists: list[np.ndarray]) -> np.ndarray:
        """The v1 path on given token ids: one sequence at a time, fp32, mean over all tokens."""
        w = self._reference_weights()
        out = np.empty((len(token_lists), self.dim), dtype=np.float32)
        for i, ids in enumerate(token_lists):
            t = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)
            out[i] = reference_hidden(w, self.cfg, t).mean(0).cpu().numpy()
        return out

    def release_reference(self) -> None:
        """Drop the reference path's fp32 copy of the weights on the device (if it made one)."""
        if self._cpu_weights is not None:
            self._ref_weights = None

    def ready_fast_path(self) -> None:
        """Nothing to build: the packed model is made at load; the fp32 copy on first use."""

    def reference_bytes(self) -> int:
        """The fp32 copy of the weights the reference path makes (none when they are fp32)."""
        weights = self._cpu_weights or {}
        return sum(v.numel() for v in weights.values()) * 4

    def reference_embed(self, seqs: list[str]) -> np.ndarray:
        """(n, dim) float32 embeddings of ``seqs`` by the v1 path."""
        return self.reference_embed_ids(self.tokenize(seqs))

    def describe(self) -> dict[str, str | int | float]:
        """Attributes for HDF5 outputs."""
        c = self.cfg
        return {
            "model": self.name,
            "model_spec": self.spec,
            "model_source": self.source,
            "dim": self.dim,
            "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads,
            "intermediate": c.intermediate_size,
            "vocab_size": c.vocab_size,
            "precision": self.precision,
            "attention_backend": self.backend,
            "compiled": int(self.compiled and not getattr(self.model.post, "failed", None)),
            "pooling": "mean over all tokens incl. [CLS] and [SEP]",
            "weights_sha256": self.weights_sha256,  # [models] the same keys as ESM-2's
            "weights_sha256_of": self.weights_of,
            "device": str(self.device),
        }


def load(
    spec: str,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    backend: str = "loop",
    compile: bool = False,
) -> DnabertEncoder:
    """DNABERT-S from ``"tiny"`` or a local Hugging Face-layout folder. A hub name is refused
    (runs never download): :func:`virnuc_core.engine.model_files.resolve_model_spec` maps
    ``"zhihan1996/DNABERT-S"`` to the fetched, locked folder. ``precision``, ``backend``,
    ``compile`` resolved for ``device`` by the caller (see :class:`DnabertEncoder`).

    ``compile`` compiles the layers' post-attention part (one graph shared by all layers and
    batches, see :mod:`virnuc_core.engine.compiling`); the registry asks for it on CUDA only."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
    device = torch.device(device)
    if spec == "tiny":
        from tokenizers import Tokenizer

        from virnuc_core.engine.models.dnabert_load import check_state_dict
        from virnuc_core.engine.models.dnabert_tiny import tiny_parts

        cfg, state, tok = tiny_parts()
        weights = check_state_dict(state, cfg, "tiny")
        tokenizer = DnaTokenizer(Tokenizer.from_str(tok.to_str()))
        source, checksum = "tiny (seeded random, built in code)", None
    else:
        folder = resolve_folder(spec)
        checksum = weights_checksum(folder)  # [models] hashed (and lock-checked) before reading
        cfg, weights, tokenizer = read_folder(folder)
        source = str(Path(folder).resolve())
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"{spec}: tokenizer has {tokenizer.vocab_size} tokens, model only {cfg.vocab_size}"
        )
    return DnabertEncoder(
        spec,
        cfg,
        weights,
        tokenizer,
        device,
        precision,
        backend,
        source,
        compile,
        weights_checksum=checksum,
    )


def random_encoder(
    cfg: DnabertConfig | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    backend: str = "loop",
    seed: int = 0,
    tokenizer_bases: int = 2_000_000,
):
    """A :class:`~virnuc_core.engine.models.dnabert.DnabertEncoder` with seeded random weights of
    shape
    ``cfg`` (default: full DNABERT-S size) and a BPE tokenizer of ``cfg.vocab_size`` trained on
    ``tokenizer_bases`` of random DNA. For benches: real architecture and cost, meaningless output.
    """
    from tokenizers import Tokenizer

    from virnuc_core.engine.models.dnabert_load import check_state_dict
    from virnuc_core.engine.models.dnabert_tiny import FULL_CONFIG, random_state_dict, train_dna_bpe

    cfg = FULL_CONFIG if cfg is None else cfg
    weights = check_state_dict(random_state_dict(cfg, seed), cfg, "random")
    tok = train_dna_bpe(cfg.vocab_size, seed, tokenizer_bases)
    tokenizer = DnaTokenizer(Tokenizer.from_str(tok.to_str()))
    return DnabertEncoder(
        "random",
        cfg,
        weights,
        tokenizer,
        torch.device(device),
        precision,
        backend,
        source=f"seeded random (seed {seed}), built in code",
    )
