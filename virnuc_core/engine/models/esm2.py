"""ESM-2 over packed batches: the whole inference model in one file.

Same maths as fair-esm's ``esm/model/esm2.py`` (embedding scale, token-dropout rescaling, pre-LN
layers with rotary attention, erf GELU, ``emb_layer_norm_after`` on the last layer's output), laid
out for packed batches: tokens of many proteins back to back, ``cu_seqlens`` saying where each
starts, no padding anywhere. Attention goes through
:func:`virnuc_core.engine.attention.varlen_attention`.

Weights come from a fair-esm model (built by fair-esm's own builder, see ``esm2_load.py``); q/k/v
are fused into one projection at load, with fair-esm's ``q * head_dim**-0.5`` folded into the q
rows so attention runs with ``scale=1``.

Two engines run the layers (same maths, but for the tanh-form GELU of ``gelu_epilogue="cublaslt"``):

- the default: each layer's element-wise work in two functions around the matmuls, eager or
  ``torch.compile``d (``compile``);
- the fused engine (``fused=True``, and always for ``precision="fp8"``): Triton kernels from
  :mod:`virnuc_core.engine.fused` between cuBLAS (bf16) or ``torch._scaled_mm`` (fp8) matmuls. In
  bf16 the output projection and fc2 add their products into the residual stream themselves
  (cuBLAS with beta = 1) and their biases are carried as one fp32 vector per LayerNorm, added
  while the row is in registers: each LayerNorm is then one read and one write
  (``residual_in_matmul``). Rotary is applied in place to q and k, one pass (or, with
  ``rotary_in_attention`` and the Triton attention kernel, as that kernel loads them). GELU is
  one pass (or, with ``gelu_epilogue``, in the fc1 matmul's epilogue: "triton", this
  project's matmul with erf GELU, or "cublaslt", cuBLASLt's GELU epilogue through
  ``torch._addmm_activation``; bench/esm2_levers.py measures both, bench/kernels_check.py the
  epilogue's error against the erf and tanh forms). For fp8, the LayerNorm, GELU
  and attention-output kernels write e4m3 values with per-row scales directly, and each
  residual add is carried into the next LayerNorm kernel instead (``torch._scaled_mm`` cannot
  add into its output).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virnuc_core.engine import fused as fk
from virnuc_core.engine.attention import choose_backend, varlen_attention
from virnuc_core.engine.compiling import COMPILE_MODES, TokenwiseCompiled
from virnuc_core.engine.fp8 import quantize_weight
from virnuc_core.engine.models.building import no_weight_init
from virnuc_core.engine.models.esm2_matmuls import LINEARS, RESIDUAL_MATMULS, LinearOps
from virnuc_core.engine.packing import PackedBatch, make_batch, pack_ffd, segment_mean
from virnuc_core.engine.triton_attention import varlen_attention_triton

log = logging.getLogger("virnuc.esm2")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = (*DTYPES, "fp8")  # fp8: e4m3 matmuls, bf16 everywhere else
MASK_RATIO_TRAIN = 0.15 * 0.8  # fair-esm's token-dropout constant
REFERENCE_TOKENS_PER_BATCH = 2048  # the original VirNucPro / fair-esm extract.py batch size


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """fair-esm's rotary convention: (x1, x2) -> (-x2, x1) over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def pre_attention(x, cos, sin, ln_w, ln_b, w, b, heads: int, eps: float):
    """LayerNorm, fused q/k/v projection, rotary on q and k: (T, dim) -> 3 x (T, heads, hd)."""
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    qkv = F.linear(h, w, b).unflatten(-1, (3, heads, -1))
    qk = qkv[:, :2]
    qk = qk * cos + rotate_half(qk) * sin  # q and k in one go; cos/sin (T, 1, 1, head_dim)
    return qk[:, 0], qk[:, 1], qkv[:, 2]


def post_attention(x, attn, out_w, out_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, eps: float):
    """Output projection and residual, then the feed-forward block (erf GELU) and residual."""
    x = x + F.linear(attn.flatten(1), out_w, out_b)
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    return x + F.linear(F.gelu(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b)  # F.gelu: erf form


@functools.cache
def compiled_ops(mode: str = "default") -> tuple[TokenwiseCompiled, TokenwiseCompiled]:
    """The two functions above compiled once per mode (weights are arguments: one graph serves
    every layer; only the token count of x, cos, sin and attn varies)."""
    return (
        TokenwiseCompiled(pre_attention, token_args=(0, 1, 2), mode=mode),
        TokenwiseCompiled(post_attention, token_args=(0, 1), mode=mode),
    )


class PackedLayer(nn.Module):
    """One pre-LN transformer layer (fair-esm's ``TransformerLayer``) over packed tokens."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, eps: float = 1e-5, device=None):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.attn_ln = nn.LayerNorm(dim, eps=eps, device=device)
        self.qkv = nn.Linear(dim, 3 * dim, device=device)  # rows: q (pre-scaled), k, v
        self.out = nn.Linear(dim, dim, device=device)
        self.ffn_ln = nn.LayerNorm(dim, eps=eps, device=device)
        self.fc1 = nn.Linear(dim, ffn_dim, device=device)
        self.fc2 = nn.Linear(ffn_dim, dim, device=device)

    def forward(self, x, cos, sin, batch: PackedBatch, backend: str, compiled: str | None = None):
        """``compiled``: None (eager) or the torch.compile mode of the element-wise work."""
        pre, post = compiled_ops(compiled) if compiled else (pre_attention, post_attention)
        ln1, ln2 = self.attn_ln, self.ffn_ln
        qkv = (ln1.weight, ln1.bias, self.qkv.weight, self.qkv.bias)
        q, k, v = pre(x, cos, sin, *qkv, self.heads, self.eps)
        attn = varlen_attention(q, k, v, batch, backend, scale=1.0)
        mlp = (self.out.weight, self.out.bias, ln2.weight, ln2.bias)
        mlp += (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        return post(x, attn, *mlp, self.eps)

    def forward_fused(self, x, y, rope, shifts, batch: PackedBatch, backend: str, ops: LinearOps):
        """The fused engine's layer: (x, y) -> (x, y'), the residual stream being x + y (+ the
        biases not yet added, ``shifts``: before each LayerNorm, with ``residual_in_matmul``).

        x is updated in place; y (an update not yet added, or None) is added by the first
        LayerNorm kernel, and the returned one by the next layer's.
        """
        ln1, ln2 = self.attn_ln, self.ffn_ln
        s1, s2 = (None, None) if shifts is None else shifts
        x, h = fk.add_layer_norm(x, y, ln1.weight, ln1.bias, self.eps, ops.quantized("qkv"), s1)
        attn = self.attention(ops.linear(h, self.qkv, "qkv"), rope, batch, backend)
        y = ops.residual(x, ops.prepare(attn.flatten(1)), self.out, "out")
        x, h = fk.add_layer_norm(x, y, ln2.weight, ln2.bias, self.eps, ops.quantized("fc1"), s2)
        return x, ops.residual(x, ops.fc1_gelu(h, self.fc1), self.fc2, "fc2")

    def attention(self, qkv, rope, batch: PackedBatch, backend: str) -> torch.Tensor:
        """Rotary attention on the q/k/v projection; ``rope``: (cos, sin, in_kernel), the tables
        per position (Triton kernel rotates) or per token (an in-place pass first)."""
        cos, sin, in_kernel = rope
        if in_kernel:
            t = qkv.view(qkv.shape[0], 3, self.heads, -1)
            cu, longest = batch.cu_seqlens, batch.max_seqlen
            return varlen_attention_triton(*t.unbind(1), cu, longest, 1.0, rotary=(cos, sin))
        q, k, v = fk.rotary_qkv(qkv, cos, sin, self.heads)
        return varlen_attention(q, k, v, batch, backend, scale=1.0)


class PackedESM2(nn.Module):
    """fair-esm's ESM2 forward for packed batches, up to one representation layer."""

    def __init__(
        self, num_layers, dim, heads, alphabet, token_dropout=True, embed_scale=1.0, eps=1e-5,
        device=None,
    ):  # fmt: skip
        super().__init__()
        self.num_layers, self.dim, self.heads = num_layers, dim, heads
        self.mask_idx = alphabet.mask_idx
        self.token_dropout, self.embed_scale = token_dropout, float(embed_scale)
        self.embed_tokens = nn.Embedding(len(alphabet), dim, device=device)
        self.layers = nn.ModuleList(
            PackedLayer(dim, heads, 4 * dim, eps, device) for _ in range(num_layers)
        )
        self.emb_layer_norm_after = nn.LayerNorm(dim, eps=eps, device=device)
        head_dim = dim // heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._pending: dict[tuple[str, ...], torch.Tensor] = {}  # pending_biases, per choice

    @classmethod
    def from_fair(cls, model, device, dtype, fp8: bool = False, fp8_layers=LINEARS) -> PackedESM2:
        """Copy a fair-esm ``ESM2``'s weights (q/k/v fused, q pre-scaled) to device/dtype.

        ``fp8``: the linear weights of every layer named in ``fp8_layers`` are quantised to e4m3
        from fp32 (one scale per output channel) as ``weight_fp8`` / ``weight_scale``; their
        ``weight`` is then emptied (any use of it fails loudly) to free the memory.
        """
        ln_eps = model.emb_layer_norm_after.eps
        # Built on the meta device, without initialising: not under torch.device("meta"),
        # whose Python-level ops import torch._dynamo (2 s of a job's start) on the way.
        with no_weight_init():
            packed = cls(
                model.num_layers,
                model.embed_dim,
                model.attention_heads,
                model.alphabet,
                model.token_dropout,
                model.embed_scale,
                ln_eps,
                device="meta",
            )
        state = {"embed_tokens.weight": model.embed_tokens.weight}
        for name in ("weight", "bias"):
            state[f"emb_layer_norm_after.{name}"] = getattr(model.emb_layer_norm_after, name)
        for i, layer in enumerate(model.layers):
            a, p = layer.self_attn, f"layers.{i}."
            for name in ("weight", "bias"):
                state[p + f"qkv.{name}"] = torch.cat(
                    [
                        getattr(a.q_proj, name).float() * a.scaling,
                        getattr(a.k_proj, name).float(),
                        getattr(a.v_proj, name).float(),
                    ]
                )
                for ours, theirs in (
                    ("attn_ln", layer.self_attn_layer_norm),
                    ("out", a.out_proj),
                    ("ffn_ln", layer.final_layer_norm),
                    ("fc1", layer.fc1),
                    ("fc2", layer.fc2),
                ):
                    state[p + f"{ours}.{name}"] = getattr(theirs, name)
        cast = {k: v.detach().to(device=device, dtype=dtype) for k, v in state.items()}
        packed.load_state_dict(cast, strict=True, assign=True)
        if fp8:  # from the fp32 weights, one matrix at a time on the device
            packed.quantize_linears(state, fp8_layers)
        inv_freq = model.layers[0].self_attn.rot_emb.inv_freq.float()  # fair-esm's own buffer
        packed.inv_freq = inv_freq.to(device)
        return packed.eval().requires_grad_(False)

    def quantize_linears(self, state: dict[str, torch.Tensor], names=LINEARS) -> None:
        """e4m3 copies of the ``names`` linear weights of every layer from the fp32 ``state``;
        see from_fair."""
        for i, layer in enumerate(self.layers):
            for name in names:
                lin = getattr(layer, name)
                w = state[f"layers.{i}.{name}.weight"].detach()
                q, scale = quantize_weight(w.to(lin.bias.device, torch.float32))
                lin.register_buffer("weight_fp8", q, persistent=False)
                lin.register_buffer("weight_scale", scale, persistent=False)
                lin.weight = nn.Parameter(lin.weight.new_empty(0), requires_grad=False)

    def pending_biases(self, matmuls: tuple[str, ...]) -> torch.Tensor:
        """(2 * num_layers + 1, dim) fp32: the biases of ``matmuls`` ("out", "fc2") the residual
        stream lacks when those matmuls add their products into it: row 2i before layer i's
        first LayerNorm (the sum over earlier layers), 2i + 1 before its second (with its own
        out bias, if "out" adds); row 2i is also the stream's shortfall after i layers.
        From the model's own biases (as F.linear would add them), made once per choice."""
        if matmuls not in self._pending:
            rows, total = [], torch.zeros_like(self.emb_layer_norm_after.bias, dtype=torch.float32)
            for layer in self.layers:
                out_b, fc2_b = (getattr(layer, n).bias.float() if n in matmuls else 0.0
                                for n in RESIDUAL_MATMULS)  # fmt: skip
                rows += [total, total + out_b]
                total = rows[-1] + fc2_b
            self._pending[matmuls] = torch.stack([*rows, total])
        return self._pending[matmuls]

    def embed(self, batch: PackedBatch) -> torch.Tensor:
        """Token embedding with fair-esm's scale and token-dropout rescaling, per sequence."""
        ids = batch.input_ids
        x = self.embed_tokens(ids)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        if self.token_dropout:
            is_mask = ids == self.mask_idx
            x = x.masked_fill(is_mask[:, None], 0.0)
            n = batch.num_seqs
            masked = torch.zeros(n, device=ids.device).index_add_(0, batch.seq_ids, is_mask.float())
            observed = masked / batch.lengths().float()  # padding never counted: there is none
            scale = (1 - MASK_RATIO_TRAIN) / (1 - observed)
            x = x * scale.to(x.dtype)[batch.seq_ids, None]
        return x

    def rotary(self, positions: torch.Tensor, dtype: torch.dtype):
        """cos, sin (T, 1, 1, head_dim) for each token's position in its own sequence."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, None, :]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(
        self,
        batch: PackedBatch,
        repr_layer: int,
        backend: str,
        compiled: str | None = None,
        ops: LinearOps | None = None,
    ) -> torch.Tensor:
        """fair-esm's ``representations[repr_layer]`` for every packed token, (T, dim).

        Layer 0 is the embedding output; the last layer's output has ``emb_layer_norm_after``
        applied, intermediate ones are the raw residual stream (as fair-esm stores them).
        Layers past ``repr_layer`` are not run. ``ops`` given: the fused engine.
        """
        if ops is not None:
            return self.forward_fused(batch, repr_layer, backend, ops)
        x = self.embed(batch)
        cos, sin = self.rotary(batch.positions, x.dtype)
        for layer in self.layers[:repr_layer]:
            x = layer(x, cos, sin, batch, backend, compiled)
        if repr_layer == self.num_layers:
            x = self.emb_layer_norm_after(x)
        return x

    def forward_fused(self, batch: PackedBatch, repr_layer: int, backend: str, ops: LinearOps):
        """:meth:`forward` through the fused engine (see the module docstring)."""
        x = self.embed(batch)
        # the kernel's two half-width products need a head dimension of 32 or more
        in_kernel = ops.rotary_in_attention and backend == "triton" and fk.triton_ok(x)
        in_kernel = in_kernel and self.dim // self.heads >= 32
        where = torch.arange(batch.max_seqlen, device=x.device) if in_kernel else batch.positions
        rope = (*fk.rotary_tables(where, self.inv_freq), in_kernel)
        pending = self.pending_biases(ops.residual_in_matmul) if ops.residual_in_matmul else None
        y = None
        for i, layer in enumerate(self.layers[:repr_layer]):
            shifts = None if pending is None else (pending[2 * i], pending[2 * i + 1])
            x, y = layer.forward_fused(x, y, rope, shifts, batch, backend, ops)
        last = None if pending is None else pending[2 * repr_layer]
        if repr_layer == self.num_layers:  # the last residual add fused into the final LN
            ln = self.emb_layer_norm_after
            return fk.add_layer_norm(x, y, ln.weight, ln.bias, ln.eps, shift=last)[1]
        x = x if y is None else x.add_(y)
        return x if last is None else (x.float() + last).to(x.dtype)


class Tokenizer:
    """fair-esm's ESM-1b alphabet and BatchConverter truncation, one protein at a time, fast.

    One-letter tokens go through an ASCII lookup table; anything else (``<mask>``, whitespace)
    through fair-esm's own ``Alphabet.encode``. Characters fair-esm rejects raise ValueError.
    """

    def __init__(self, alphabet, truncation: int = 1024):
        self.alphabet, self.truncation = alphabet, int(truncation)
        self._lut = np.full(256, -1, dtype=np.int64)
        for tok, idx in alphabet.tok_to_idx.items():
            if len(tok) == 1:
                self._lut[ord(tok)] = idx
        self._bos, self._eos = np.array([alphabet.cls_idx]), np.array([alphabet.eos_idx])

    def encode(self, seq: str) -> np.ndarray:
        """Residue token ids, no specials, not truncated."""
        ids = self._lut[np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)]
        if ids.size and ids.min() >= 0:
            return ids
        try:
            return np.asarray(self.alphabet.encode(seq), dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"protein has a character not in the ESM-2 alphabet: {e}") from None

    def __call__(self, seqs: list[str]) -> list[np.ndarray]:
        """BOS + the first ``truncation`` residue tokens + EOS, for each protein."""
        t = self.truncation
        return [np.concatenate([self._bos, self.encode(s)[:t], self._eos]) for s in seqs]


def _device_precision(precision: str, device: torch.device) -> str:
    """``precision`` checked; "auto" resolved (bf16 on CUDA); fp32 off CUDA, said in the log."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda" and precision != "fp32":
        log.info("ESM-2 on %s runs in fp32 (asked for %s)", device, precision)
        precision = "fp32"
    return precision


class ESMEncoder:
    """ESM-2 protein embeddings: packed fast path and the fair-esm reference (v1) path."""

    name = "esm"

    def __init__(
        self,
        fair_model,
        alphabet,
        *,
        spec: str,
        device="cpu",
        precision="fp32",
        backend="auto",
        repr_layer: int | None = None,
        truncation: int = 1024,
        compile: bool = False,
        compile_mode: str = "default",
        reference_factory=None,
        fused: bool = False,
        gelu_epilogue: str = "",
        fp8_layers: tuple[str, ...] = LINEARS,
        residual_in_matmul: tuple[str, ...] = RESIDUAL_MATMULS,
        rotary_in_attention: bool = False,
    ):
        self.device = torch.device(device)
        precision = _device_precision(precision, self.device)
        fp8 = precision == "fp8"
        self.spec, self.precision = spec, precision
        self.dtype = torch.bfloat16 if fp8 else DTYPES[precision]
        self.alphabet, self.truncation = alphabet, int(truncation)
        self.num_layers, self.heads = fair_model.num_layers, fair_model.attention_heads
        self.dim = fair_model.embed_dim
        self.repr_layer = self.num_layers if repr_layer is None else int(repr_layer)
        if not 0 <= self.repr_layer <= self.num_layers:
            raise ValueError(f"repr_layer must be in 0..{self.num_layers}, got {self.repr_layer}")
        self.backend = choose_backend(backend, self.device.type, False)
        # With a ``reference_factory`` the fair-esm model is dropped after packing it here (an
        # embed job) and rebuilt if the reference path runs. Without one it is kept as the fp32
        # reference (the caller's model, as it is) and packed on first use of the fast path:
        # a job running only the reference path never builds the packed copy.
        self._reference = None if reference_factory else fair_model
        self._reference_factory = reference_factory
        self._pack_args = (self.device, self.dtype, fp8, fp8_layers)
        self._model = (
            PackedESM2.from_fair(fair_model, *self._pack_args) if reference_factory else None
        )
        self.n_params = sum(p.numel() for p in fair_model.parameters())
        # fused: Triton kernels between the matmuls instead of torch.compile (fp8 needs them)
        ops = LinearOps(fp8, gelu_epilogue, fp8_layers=fp8_layers,
                        residual_in_matmul=residual_in_matmul,
                        rotary_in_attention=rotary_in_attention)  # fmt: skip
        self.ops = ops if fused or fp8 else None
        # compile: fuse the element-wise work around the matmuls (attention stays eager)
        self.compiled = bool(compile) and self.device.type == "cuda" and self.ops is None
        if compile_mode not in COMPILE_MODES:  # said here, not at the first batch
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        self.compile_mode = compile_mode
        if self.compiled:  # only then: torch.compile imports torch._dynamo (2 s of a job's start)
            compiled_ops(compile_mode)
        self.tokenizer = Tokenizer(alphabet, truncation)
        # [models] sha256 of the weights as loaded, set by esm2_load.build_fair_model ("" when
        # the model object was built elsewhere: describe() then hashes the packed tensors)
        self.weights_sha256 = getattr(fair_model, "virnuc_weights_sha256", "")
        self.weights_of = getattr(fair_model, "virnuc_weights_of", "")

    @property
    def model(self) -> PackedESM2:
        """The packed model of the fast path (built on first use if not at construction)."""
        if self._model is None:
            self._model = PackedESM2.from_fair(self._reference, *self._pack_args)
        return self._model

    def release_reference(self) -> None:
        """Pack the fast model (from the fair-esm model, on the device already if the reference
        path ran) and drop the fair-esm model; the reference path rebuilds it from the file."""
        if self._reference is None:
            return
        self.model  # noqa: B018 - packs it
        spec, self._reference = self.spec, None
        if self._reference_factory is None:
            from virnuc_core.engine.models.esm2_load import build_fair_model

            self._reference_factory = lambda: build_fair_model(spec)[0]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def ready_fast_path(self) -> None:
        """The fair-esm model on the device in fp32 (the reference path's), then the fast model
        packed from it there: the two paths can then run at once, in two threads."""
        self.reference_model()
        self.model  # noqa: B018 - packs it

    def reference_bytes(self) -> int:
        """The fair-esm model in fp32: 4 bytes a parameter."""
        return self.n_params * 4

    def tokenize(self, seqs: list[str]) -> list[np.ndarray]:
        """BOS + the first ``truncation`` residue tokens + EOS, as fair-esm's BatchConverter."""
        return self.tokenizer(seqs)

    # -- fast path ---------------------------------------------------------------------------
    def pool_weight(self, batch: PackedBatch) -> torch.Tensor:
        """1 for residue tokens 1..min(len, truncation), 0 for BOS, EOS and the rest."""
        last = batch.lengths()[batch.seq_ids] - 2  # position of the last residue
        pos = batch.positions
        return (pos >= 1) & (pos <= last) & (pos <= self.truncation)

    @torch.inference_mode()
    def embed_packed(self, batch: PackedBatch) -> torch.Tensor:
        """(n, dim) float32 mean of layer ``repr_layer`` over each protein's residues."""
        mode = self.compile_mode if self.compiled else None
        hidden = self.model(batch, self.repr_layer, self.backend, mode, self.ops)
        return segment_mean(hidden, batch.seq_ids, self.pool_weight(batch), batch.num_seqs)

    def embed(self, seqs: list[str], token_budget: int = 16384) -> np.ndarray:
        """Convenience: tokenize, pack, embed; (n, dim) float32 in input order."""
        tokens = self.tokenize(seqs)
        out = np.zeros((len(seqs), self.dim), dtype=np.float32)
        for idx in pack_ffd([len(t) for t in tokens], token_budget):
            batch = make_batch([tokens[i] for i in idx]).to(self.device)
            out[idx] = self.embed_packed(batch).cpu().numpy()
        return out

    # -- reference (v1) path -----------------------------------------------------------------
    def reference_model(self):
        """fair-esm's own ESM2 in fp32 on ``self.device`` (built on first use)."""
        if self._reference is None:
            self._reference = self._reference_factory()
        self._reference = self._reference.to(self.device, torch.float32).eval()
        return self._reference

    def reference_embed(self, seqs: list[str]) -> np.ndarray:
        """The original VirNucPro path: fair-esm forward, fp32 (no TF32), padded batches of
        <= 2048 tokens from fair-esm's batching, BatchConverter truncation, mean over 1..L."""
        model = self.reference_model()  # outside inference mode: the fast path may pack it later
        with torch.inference_mode():
            return self._reference_rows(model, seqs)

    def _reference_rows(self, model, seqs: list[str]) -> np.ndarray:
        import esm

        layer = self.repr_layer
        convert = self.alphabet.get_batch_converter(truncation_seq_length=self.truncation)
        dataset = esm.data.FastaBatchedDataset([str(i) for i in range(len(seqs))], list(seqs))
        out = np.zeros((len(seqs), self.dim), dtype=np.float32)
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            for idx in dataset.get_batch_indices(REFERENCE_TOKENS_PER_BATCH, extra_toks_per_seq=1):
                _, _, toks = convert([(str(i), seqs[i]) for i in idx])
                rep = model(toks.to(self.device), repr_layers=[layer])["representations"][layer]
                rep = rep.float().cpu()
                n_res = (toks != self.alphabet.padding_idx).sum(1) - 2
                for j, i in enumerate(idx):
                    keep = min(self.truncation, int(n_res[j]))
                    if keep > 0:
                        out[i] = rep[j, 1 : keep + 1].mean(0).numpy()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        return out

    def compile_failed(self) -> bool:
        """Whether torch.compile failed (the layers then ran eagerly)."""
        return self.compiled and any(op.failed for op in compiled_ops(self.compile_mode))

    def describe(self) -> dict[str, str | int | float]:
        """Attributes recorded with the embeddings."""
        import esm

        from virnuc_core.util.digests import tensors_sha256  # [models] the weights checksum

        return {
            "model": self.spec,
            "family": "esm2",
            "num_layers": self.num_layers,
            "dim": self.dim,
            "heads": self.heads,
            "parameters": self.n_params,
            "repr_layer": self.repr_layer,
            "precision": self.precision,
            "attention_backend": self.backend,
            "compiled": int(self.compiled and not self.compile_failed()),
            "compile_mode": self.compile_mode if self.compiled else "",
            "truncation": self.truncation,
            "pooling": f"mean of layer {self.repr_layer} over residues "
            f"1..min(len,{self.truncation}) (BOS/EOS excluded)",
            "fair_esm_version": getattr(esm, "__version__", ""),
            "torch_version": torch.__version__,
            "weights_sha256": self.weights_sha256 or tensors_sha256(self.model.state_dict()),
            "weights_sha256_of": self.weights_of or "tensors of the packed model (no file)",
            "fused_kernels": int(self.ops is not None),
            "kernels": self.ops.describe() if self.ops else "",
        }


def load(
    spec: str,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    backend: str = "auto",
    *,
    repr_layer: int | None = None,
    truncation: int = 1024,
    compile: bool = False,
    compile_mode: str = "default",
    fused: bool = False,
    keep_reference: bool = False,
    gelu_epilogue: str = "",
) -> ESMEncoder:
    """An :class:`ESMEncoder` for ``spec``: "tiny" or a local fair-esm ``.pt`` path (a fair-esm
    name is refused: runs never download). ``precision`` "fp8" and ``fused`` run the fused
    engine, ``gelu_epilogue`` its fc1 (see the module docstring).

    ``keep_reference``: keep the fair-esm model built here as the fp32 reference (a validation
    job, which runs only that path). Otherwise it is dropped once packed and rebuilt from the
    file if the reference path is used: an embed job does not hold 4 bytes a parameter on
    the host for the whole run (12 GB for ESM-2 3B), and a validation job does not read and
    build the checkpoint twice."""
    from virnuc_core.engine.models.esm2_load import build_fair_model

    fair_model, alphabet = build_fair_model(spec)
    factory = None if keep_reference else lambda: build_fair_model(spec)[0]
    return ESMEncoder(
        fair_model,
        alphabet,
        spec=spec,
        device=device,
        precision=precision,
        backend=backend,
        repr_layer=repr_layer,
        truncation=truncation,
        compile=compile,
        compile_mode=compile_mode,
        reference_factory=factory,
        fused=fused,
        gelu_epilogue=gelu_epilogue,
    )
