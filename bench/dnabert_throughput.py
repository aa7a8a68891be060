"""DNABERT-S speed and fidelity on one GPU: the original style, padded batches, and the job's way.

The full-size DNABERT-S architecture with seeded random weights, written as a model folder
(config.json, tokenizer.json, model.safetensors) and loaded as a job loads it; speed does not
depend on the values. Its BPE tokenizer (vocab 4096) is trained on seeded random DNA; frames
are random DNA of 300-500 bases, 60-113 tokens each (mean 85, [CLS] and [SEP] included), where
the real tokenizer gives ~100-130 per 500 bases of real DNA: frames/s run faster here, tokens/s
and MFU carry over.

Modes, all in one run:

(a) original: the encoder's reference path, one sequence at a time in fp32 with an explicit
    ALiBi matrix, as the original called ``model(ids)[0]`` per sequence (``--orig-frames``);
    its embeddings are what every other mode is compared with.
(b) padded: bf16 batches of 256 frames in input order, padded to the batch's longest, every
    layer on the padded (B, L) tensor, SDPA with an additive ALiBi + key-padding bias: a plain
    HF-style padded BERT forward over the checkpoint's tensors, standing in for the v2.0
    fork's padded batches.
(c) packed: what an embed job runs: ``load_encoder`` with the job's settings (the schema's
    defaults, ``--set`` changes), the job's packer and its device loop (batches copied from
    pinned memory on a side stream, so every batch's layout is built afresh), once per
    ``--backends`` label (``padded-auto``: the padded backend with SDPA choosing its kernel,
    as before round 2) and, for ``--compile-backends``, with ``compile: true`` (compiled
    as a job compiles it). Every pass is timed: the first meets every batch shape for the first
    time, as a job does; the first pass and the fastest are both reported.

tokens/s and MFU count real tokens: FLOPs = 2 x non-embedding parameters a token + layers x
4 x L^2 x hidden a frame, over the bf16 matmul rate measured in this run. Exit 1 when a mode
fails or its cosine to (a) is below ``--mean-min`` (mean) or ``--min-min`` (any frame).

    python -m bench.dnabert_throughput --out bench/results/dnabert_throughput.json
    python -m bench.dnabert_throughput --orig-frames 1000 --out ...    # fidelity on 1,000 frames
    python -m bench.dnabert_throughput --quick        # CPU crash check (tiny model)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bench import _harness as h
from virnuc_core.engine.attention import alibi_slopes
from virnuc_core.engine.models.dnabert_tiny import (
    FULL_CONFIG,
    TINY_CONFIG,
    random_dna,
    train_dna_bpe,
    write_folder,
)
from virnuc_core.jobs.validate import cosine_rows
from virnuc_core.registry import load_encoder

COLUMNS = ["mode", "backend", "frames", "tokens", "seconds", "tokens_per_s", "frames_per_s",
           "tflops", "mfu", "speedup_vs_a", "cos_vs_a_min", "pass"]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the run to a CPU crash check."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=20000, help="frames for (b) and (c)")
    p.add_argument("--orig-frames", type=int, default=500, help="frames for (a) (slow)")
    p.add_argument("--batch-size", type=int, default=256, help="(b) frames per padded batch")
    p.add_argument("--token-budget", type=int, default=65536, help="(c) tokens per packed batch")
    p.add_argument("--backends", nargs="*", help="(c) default: auto (the job's) padded")
    p.add_argument("--compile-backends", nargs="*", help="(c) also compiled (default: auto)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--repeats", type=int, default=2, help="timed passes; the fastest is kept")
    p.add_argument("--tokenizer-bases", type=int, default=2_000_000, help="BPE training DNA")
    p.add_argument("--mean-min", type=float, default=0.999, help="mean cosine to (a), at least")
    p.add_argument("--min-min", type=float, default=0.99, help="every frame's cosine, at least")
    h.add_settings_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny model, few frames (CPU crash check)")
    p.add_argument("--out", default=None, help="write results JSON here")
    a = p.parse_args(argv)
    if a.quick:
        a.frames, a.orig_frames, a.batch_size, a.token_budget, a.repeats = 64, 16, 16, 2048, 1
        a.tokenizer_bases = 100_000
    if a.backends is None:
        a.backends = ["auto", "padded"]
    if a.compile_backends is None:
        a.compile_backends = ["auto"] if h.CUDA else []
    return a


class Bench:
    """The model folder, its tensors, the tokenised frames, and the rows collected."""

    def __init__(self, a: argparse.Namespace, folder: Path):
        self.a, self.folder = a, folder
        self.cfg = TINY_CONFIG if a.quick else FULL_CONFIG
        self.peak = h.measure_matmul_tflops(torch.bfloat16)
        print(f"device {h.DEVICE}; measured bf16 matmul rate {self.peak:.1f} TFLOP/s", flush=True)
        tok = train_dna_bpe(self.cfg.vocab_size, a.seed, a.tokenizer_bases)
        write_folder(folder, self.cfg, tokenizer=tok, seed=a.seed)
        self.weights = load_file(str(folder / "model.safetensors"))
        self.params = sum(v.numel() for k, v in self.weights.items() if k.startswith("encoder."))
        self.frames = random_dna(np.random.default_rng(a.seed + 1), a.frames, 300, 500)
        self.ref_enc = load_encoder(self.settings(), h.DEVICE, reference=True)
        t0 = time.perf_counter()
        self.toks = self.ref_enc.tokenize(self.frames)
        rate = len(self.frames) / (time.perf_counter() - t0)
        self.lengths = np.array([len(t) for t in self.toks])
        self.rows: list[dict] = []
        self.outputs: dict[str, np.ndarray] = {}
        print(f"{a.frames} frames, tokens/frame min {self.lengths.min()} mean "
              f"{self.lengths.mean():.1f} max {self.lengths.max()}; tokenizer {rate:.0f} "
              f"frames/s; non-embedding params {self.params / 1e6:.1f} M", flush=True)  # fmt: skip

    def settings(self, backend: str | None = None, compiled: bool = False):
        """A DNABERT-S job's settings for this run (``--set``, then this mode's changes)."""
        changes = [*self.a.set, ("precision", self.a.precision), ("compile", compiled),
                   ("token_budget.dnabert", self.a.token_budget)]  # fmt: skip
        changes += [("attention_backend", backend)] if backend else []
        return h.job_settings("dnabert", str(self.folder), changes)

    def record(self, mode: str, backend: str, n: int, secs: float, **extra) -> None:
        """A timed row over the first ``n`` frames: tokens/s, TFLOP/s, MFU (real tokens)."""
        ls = self.lengths[:n]
        flops = h.model_flops(ls, self.params, self.cfg.num_hidden_layers, self.cfg.hidden_size)
        tok, tflops = int(ls.sum()), flops / secs / 1e12
        self.rows.append({"mode": mode, "backend": backend, "frames": n, "tokens": tok,
                          "seconds": round(secs, 4), "frames_per_s": n / secs,
                          "tokens_per_s": tok / secs, "tflops": tflops,
                          "mfu": tflops / self.peak, **extra})  # fmt: skip
        print(f"  {mode}/{backend}: {tok / secs:,.0f} tokens/s", flush=True)


def run_original(b: Bench) -> None:
    """(a) one sequence at a time through the fp32 reference path."""
    sub = b.frames[: b.a.orig_frames]
    b.ref_enc.reference_embed(sub[:4])  # warm-up
    best = float("inf")
    for _ in range(b.a.repeats):
        h.sync()
        t0 = time.perf_counter()
        b.outputs["a"] = b.ref_enc.reference_embed(sub)
        best = min(best, time.perf_counter() - t0)
    b.record("a_original", "reference_fp32", len(sub), best)


@torch.inference_mode()
def padded_forward(w: dict, cfg, slopes, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A plain padded BERT forward over the checkpoint's tensors ``w``: (B, L) ids and bool mask
    -> (B, hidden) mean over the real tokens."""
    b, n = ids.shape
    hid, inter, eps = cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps

    def ln(x, key):
        return F.layer_norm(x, (hid,), w[key + ".weight"], w[key + ".bias"], eps)

    def lin(x, key):
        return F.linear(x, w[key + ".weight"], w[key + ".bias"])

    emb = F.embedding(ids, w["embeddings.word_embeddings.weight"])
    x = ln(emb + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    pos = torch.arange(n, device=ids.device)
    alibi = -slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()  # (H, L, L)
    keymask = torch.zeros(b, 1, 1, n, device=ids.device).masked_fill_(
        ~mask[:, None, None, :], float("-inf")
    )
    bias = (alibi[None] + keymask).to(x.dtype)
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        qkv = lin(x, p + "attention.self.Wqkv").view(b, n, 3, cfg.num_attention_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2)
        x = ln(lin(a.reshape(b, n, hid), p + "attention.output.dense") + x,
               p + "attention.output.LayerNorm")  # fmt: skip
        gate = w[p + "mlp.gated_layers.weight"]
        g = F.gelu(F.linear(x, gate[:inter])) * F.linear(x, gate[inter:])
        x = ln(lin(g, p + "mlp.wo") + x, p + "mlp.layernorm")
    m = mask.to(torch.float32)[..., None]
    return (x.float() * m).sum(1) / m.sum(1)


def run_padded(b: Bench) -> None:
    """(b) plain padded batches in input order through :func:`padded_forward`."""
    precision = b.settings().precision if h.CUDA else "fp32"  # as load_encoder resolves it
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    w = {k: v.to(h.DEVICE, dtype) for k, v in b.weights.items()}
    slopes = alibi_slopes(b.cfg.num_attention_heads).to(h.DEVICE)
    batches = []
    for s in range(0, len(b.toks), b.a.batch_size):
        group = b.toks[s : s + b.a.batch_size]
        ids = torch.zeros(len(group), max(len(t) for t in group), dtype=torch.int64)
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        for i, t in enumerate(group):
            ids[i, : len(t)], mask[i, : len(t)] = torch.from_numpy(t), True
        batches.append((ids.to(h.DEVICE), mask.to(h.DEVICE)))
    padded_forward(w, b.cfg, slopes, *batches[0])  # warm-up
    best = float("inf")
    for _ in range(b.a.repeats):
        h.sync()
        t0 = time.perf_counter()
        outs = [padded_forward(w, b.cfg, slopes, i, m) for i, m in batches]
        h.sync()
        best = min(best, time.perf_counter() - t0)
    b.outputs["b_padded_batches"] = torch.cat(outs).cpu().numpy()
    overhead = sum(int(i.numel()) for i, _ in batches) / int(b.lengths.sum()) - 1
    b.record("b_padded_batches", f"sdpa_bs{b.a.batch_size}", len(b.toks), best,
             padding_overhead=overhead)  # fmt: skip


def run_packed(b: Bench, label: str, compiled: bool) -> None:
    """(c) one backend label, as a job runs it: warm-up, then ``--repeats`` timed passes."""
    name = label + ("+compile" if compiled else "")
    with h.backend_label(label) as backend:
        enc = load_encoder(b.settings(backend, compiled), h.DEVICE)
        batches = h.job_batches(b.toks, b.a.token_budget)
        t0 = time.perf_counter()
        h.run_batches(enc.embed_packed, batches[:2])  # warm-up (compile compiles here)
        warm = time.perf_counter() - t0
        passes = [h.run_batches(enc.embed_packed, batches, keep=True) for _ in range(b.a.repeats)]
    times = [t.seconds for t in passes]
    b.outputs[f"c_{name}"] = passes[-1].embeddings
    b.record("c_packed", name, len(b.toks), min(times), batches=len(batches),
             warmup_seconds=round(warm, 2), pass_seconds=[round(t, 4) for t in times],
             first_pass_tokens_per_s=passes[0].tokens_per_s, encoder=enc.describe())  # fmt: skip


def add_comparisons(b: Bench) -> None:
    """Speed-up over (a), cosine to (a)'s embeddings and pass/fail, on every row."""
    base, ref = b.rows[0]["tokens_per_s"], b.outputs["a"]
    for r in b.rows:
        if "tokens_per_s" in r:
            r["speedup_vs_a"] = r["tokens_per_s"] / base
        key = "b_padded_batches" if r["mode"] == "b_padded_batches" else f"c_{r['backend']}"
        if r["mode"] != "a_original" and key in b.outputs:
            c = cosine_rows(b.outputs[key][: len(ref)], ref)
            r["cos_vs_a_mean"], r["cos_vs_a_min"] = float(c.mean()), float(c.min())
            r["pass"] = bool(c.mean() >= b.a.mean_min and c.min() >= b.a.min_min)
        elif "error" in r:
            r["pass"] = False


def main(argv=None) -> int:
    """Run modes (a), (b), (c); print the table; write JSON; 1 if a mode failed its check."""
    a = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(a, Path(tmp) / "dnabert")
        run_original(b)
        run_padded(b)
        runs = [(x, False) for x in a.backends] + [(x, True) for x in a.compile_backends]
        for label, compiled in runs:
            try:
                run_packed(b, label, compiled)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other backends
                name = label + ("+compile" if compiled else "")
                print(f"  c_packed/{name}: FAILED {type(exc).__name__}: {exc}"[:2000], flush=True)
                b.rows.append({"mode": "c_packed", "backend": name,
                               "error": f"{type(exc).__name__}: {str(exc)[:500]}"})  # fmt: skip
                if h.CUDA:
                    torch.cuda.empty_cache()
    add_comparisons(b)
    h.print_table(b.rows, COLUMNS)
    ls = b.lengths
    h.write_json(a.out, {
        "bench": "dnabert_throughput", "machine": h.machine_info(), "config": b.cfg.to_dict(),
        "quick": a.quick, "precision": a.precision, "bf16_matmul_tflops": b.peak,
        "token_budget": a.token_budget, "batch_size": a.batch_size,
        "settings": b.settings().as_dict(), "thresholds": [a.mean_min, a.min_min],
        "frames": {"n": a.frames, "orig_n": a.orig_frames, "bases": [300, 500],
                   "tokens_mean": float(ls.mean()), "tokens_min": int(ls.min()),
                   "tokens_max": int(ls.max()),
                   "tokenizer": f"BPE (vocab {b.cfg.vocab_size}) trained on random DNA"},
        "flops_per_token": "2 * non-embedding params + layers * 4 * seq_len * hidden",
        "non_embedding_params": b.params, "results": b.rows,
    })  # fmt: skip
    return 0 if all(r.get("pass", True) for r in b.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
