"""ESM-2 over packed batches: the whole inference model in one file.

Same maths as fair-esm's ``esm/model/esm2.py`` (embedding scale, token-dropout rescaling, pre-LN
layers with rotary attention, erf GELU, ``emb_layer_norm_after`` on the last layer's output), laid
out for packed batches: tokens of many proteins back to back, ``cu_seqlens`` saying where each
starts, no padding anywhere. Attention goes through
:func:`virnuc_core.engine.attention.varlen_attention`.

Weights come from a fair-esm model (built by fair-esm's own builder, see ``esm2_load.py``); q/k/v
are fused into one projection at load, with fair-esm's ``q * head_dim**-0.5`` folded into the q
rows so attention runs with ``scale=1``.

One engine runs the layers: the memory-bound work between the matmuls is done by
:mod:`virnuc_core.engine.fused` (Triton kernels on CUDA with Triton; their plain-PyTorch twins,
eager, on the CPU or without Triton), the matmuls by cuBLAS. The output projection and fc2 add
their products into the residual stream themselves (cuBLAS with beta = 1) and their biases are
carried as one fp32 vector per LayerNorm, added while the row is in registers: each LayerNorm is
then one read and one write. Rotary is applied in place to q and k, one pass; fc1's GELU is in
its matmul's epilogue (:mod:`virnuc_core.engine.models.esm2_matmuls`). Levers measured and
removed (rotary inside the attention kernel, a Triton GELU matmul, fp8, torch.compile of these
layers): bench/results/README.md, code in commit eafe23c.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from virnuc_core.engine import fused as fk
from virnuc_core.engine.attention import RESOLVED, varlen_attention
from virnuc_core.engine.models.building import no_weight_init
from virnuc_core.engine.models.esm2_matmuls import RESIDUAL_MATMULS, LinearOps
from virnuc_core.engine.packing import PackedBatch, make_batch, pack_ffd, segment_mean

log = logging.getLogger("virnuc.esm2")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MASK_RATIO_TRAIN = 0.15 * 0.8  # fair-esm's token-dropout constant
REFERENCE_TOKENS_PER_BATCH = 2048  # the original VirNucPro / fair-esm extract.py batch size


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

    def forward(self, x, y, rope, shifts, batch: PackedBatch, backend: str, ops: LinearOps):
        """(x, y) -> (x, y'), the residual stream being x + y (+ the biases not yet added,
        ``shifts``: before each LayerNorm, or (None, None)); ``rope``: (cos, sin) per token.

        x is updated in place; y (an update not yet added, or None) is added by the first
        LayerNorm kernel, and the returned one by the next layer's.
        """
        ln1, ln2 = self.attn_ln, self.ffn_ln
        s1, s2 = shifts
        x, h = fk.add_layer_norm(x, y, ln1.weight, ln1.bias, self.eps, s1)
        qkv = F.linear(h, self.qkv.weight, self.qkv.bias)
        q, k, v = fk.rotary_qkv(qkv, *rope, self.heads)
        attn = varlen_attention(q, k, v, batch, backend, scale=1.0)
        y = ops.residual(x, attn.flatten(1), self.out, "out")
        x, h = fk.add_layer_norm(x, y, ln2.weight, ln2.bias, self.eps, s2)
        return x, ops.residual(x, ops.fc1_gelu(h, self.fc1), self.fc2, "fc2")


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
    def from_fair(cls, model, device, dtype) -> PackedESM2:
        """Copy a fair-esm ``ESM2``'s weights (q/k/v fused, q pre-scaled) to device/dtype."""
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
        inv_freq = model.layers[0].self_attn.rot_emb.inv_freq.float()  # fair-esm's own buffer
        packed.inv_freq = inv_freq.to(device)
        return packed.eval().requires_grad_(False)

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

    def forward(self, batch: PackedBatch, repr_layer: int, backend: str, ops: LinearOps):
        """fair-esm's ``representations[repr_layer]`` for every packed token, (T, dim).

        Layer 0 is the embedding output; the last layer's output has ``emb_layer_norm_after``
        applied, intermediate ones are the raw residual stream (as fair-esm stores them).
        Layers past ``repr_layer`` are not run.
        """
        x = self.embed(batch)
        rope = fk.rotary_tables(batch.positions, self.inv_freq)
        pending = self.pending_biases(ops.residual_in_matmul) if ops.residual_in_matmul else None
        y = None
        for i, layer in enumerate(self.layers[:repr_layer]):
            shifts = (None, None) if pending is None else (pending[2 * i], pending[2 * i + 1])
            x, y = layer(x, y, rope, shifts, batch, backend, ops)
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


class ESMEncoder:
    """ESM-2 protein embeddings: packed fast path and the fair-esm reference (v1) path."""

    name = "esm"

    def __init__(
        self, fair_model, spec: str, device="cpu", precision: str = "fp32", backend: str = "loop",
        repr_layer: int | None = None, truncation: int = 1024, reference_factory=None,
    ):  # fmt: skip
        """``fair_model``: fair-esm's ESM2 (its ``alphabet`` attached, as fair-esm's builder
        does); ``precision`` ("fp32", "bf16", "fp16") and ``backend`` (a concrete attention
        backend, :data:`virnuc_core.engine.attention.RESOLVED`) as the caller resolved them for
        ``device``; ``reference_factory``: rebuilds the fair-esm model (see below)."""
        self.device = torch.device(device)
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
        if backend not in RESOLVED:
            raise ValueError(f"attention backend must be one of {RESOLVED} (resolved by "
                             f"attention.choose_backend), got {backend!r}")  # fmt: skip
        self.spec, self.precision, self.backend = spec, precision, backend
        self.dtype = DTYPES[precision]
        self.alphabet, self.truncation = fair_model.alphabet, int(truncation)
        self.num_layers, self.heads = fair_model.num_layers, fair_model.attention_heads
        self.dim = fair_model.embed_dim
        self.repr_layer = self.num_layers if repr_layer is None else int(repr_layer)
        if not 0 <= self.repr_layer <= self.num_layers:
            raise ValueError(f"repr_layer must be in 0..{self.num_layers}, got {self.repr_layer}")
        # With a ``reference_factory`` the fair-esm model is dropped after packing it here (an
        # embed job) and rebuilt if the reference path runs. Without one it is kept as the fp32
        # reference (the caller's model, as it is) and packed on first use of the fast path:
        # a job running only the reference path never builds the packed copy.
        self._reference = None if reference_factory else fair_model
        self._reference_factory = reference_factory
        self._model = (
            PackedESM2.from_fair(fair_model, self.device, self.dtype) if reference_factory else None
        )
        self.n_params = sum(p.numel() for p in fair_model.parameters())
        self.ops = LinearOps()
        self.tokenizer = Tokenizer(self.alphabet, truncation)
        # [models] sha256 of the weights as loaded, set by esm2_load.build_fair_model ("" when
        # the model object was built elsewhere: describe() then hashes the packed tensors)
        self.weights_sha256 = getattr(fair_model, "virnuc_weights_sha256", "")
        self.weights_of = getattr(fair_model, "virnuc_weights_of", "")

    @property
    def model(self) -> PackedESM2:
        """The packed model of the fast path (built on first use if not at construction)."""
        if self._model is None:
            self._model = PackedESM2.from_fair(self._reference, self.device, self.dtype)
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
        hidden = self.model(batch, self.repr_layer, self.backend, self.ops)
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
            "compiled": 0,  # never (DNABERT-S's key too)
            "truncation": self.truncation,
            "pooling": f"mean of layer {self.repr_layer} over residues "
            f"1..min(len,{self.truncation}) (BOS/EOS excluded)",
            "fair_esm_version": getattr(esm, "__version__", ""),
            "torch_version": torch.__version__,
            "weights_sha256": self.weights_sha256 or tensors_sha256(self.model.state_dict()),
            "weights_sha256_of": self.weights_of or "tensors of the packed model (no file)",
            "fused_kernels": 1,  # the one path (Triton's PyTorch twins where it cannot run)
            "kernels": self.ops.describe(),
        }


def load(
    spec: str,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    backend: str = "loop",
    *,
    repr_layer: int | None = None,
    truncation: int = 1024,
    keep_reference: bool = False,
) -> ESMEncoder:
    """An :class:`ESMEncoder` for ``spec``: "tiny" or a local fair-esm ``.pt`` path (a fair-esm
    name is refused: runs never download); ``precision`` and ``backend`` resolved for
    ``device`` by the caller (:func:`virnuc_core.registry.load_encoder`).

    ``keep_reference``: keep the fair-esm model built here as the fp32 reference (a validation
    job, which runs only that path). Otherwise it is dropped once packed and rebuilt from the
    file if the reference path is used: an embed job does not hold 4 bytes a parameter on
    the host for the whole run (12 GB for ESM-2 3B), and a validation job does not read and
    build the checkpoint twice."""
    from virnuc_core.engine.models.esm2_load import build_fair_model

    fair_model = build_fair_model(spec)[0]
    factory = None if keep_reference else lambda: build_fair_model(spec)[0]
    return ESMEncoder(fair_model, spec, device, precision, backend, repr_layer, truncation, factory)
