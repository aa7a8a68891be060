"""DNABERT-S throughput on one GPU: the original style, padded batches, and packed (ours).

Full-size DNABERT-S architecture with seeded random weights (speed does not depend on the values)
and a BPE tokenizer of vocab 4096 trained in code on seeded random DNA. Frames are random DNA of
300-500 bases (like the spec's 500-base chunks). The real tokenizer gives ~100-130 tokens per
500 bases of real DNA; this random one gives 60-113 per frame (mean 85; [CLS] and [SEP]
included), so frames/s here run faster than on real data; tokens/s and MFU carry over.

Modes, all in one run:

(a) original: one sequence at a time, fp32, our plain reference (explicit ALiBi matrix and
    softmax(QK^T*scale + bias)V), as the original called ``model(ids)[0]`` per sequence.
(b) padded: bf16 batches of 256 frames in input order, padded to the batch's longest, every layer
    run on the padded (B, L) tensor, attention by SDPA with an additive ALiBi + key-padding bias:
    a plain HF-style padded BERT forward written here (same weights as ours), standing in for the
    v2.0 fork's padded batches.
(c) packed: ours, ``DnabertEncoder.embed_packed`` on first-fit-decreasing packed batches of at most
    ``--token-budget`` tokens, once per CUDA attention backend (padded, flex, flash if importable;
    ``triton``: the Triton varlen kernel with ALiBi inside; ``padded-auto``: the padded backend
    with SDPA left to choose its kernel, as before round 2), and again with ``compile=True`` for
    ``--compile-backends`` (default: padded). Every pass over the batches is timed: the first
    pass meets every batch shape for the first time (as a job does), later ones do not;
    ``first_pass_tokens_per_s`` and the fastest pass are both reported.

Inputs are tokenised and laid out (and copied to the GPU) before the clock starts. tokens/s and
MFU count real tokens only: FLOPs per sequence of n tokens = n * 2 * (non-embedding parameters)
+ layers * 4 * n^2 * hidden (QK^T and AV); MFU divides by the bf16 matmul rate measured in this
run (bench/mfu.py). (a) and (b) are also checked against each other and (c) by cosine.

    python bench/dnabert_throughput.py --out bench/results/dnabert_throughput.json
    python bench/dnabert_throughput.py --quick        # CPU crash check (tiny model)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mfu  # noqa: E402  (bench/mfu.py, next to this file)

from virnuc_core import attention  # noqa: E402
from virnuc_core.attention import choose_backend  # noqa: E402
from virnuc_core.compiling import TokenwiseCompiled  # noqa: E402
from virnuc_core.models.dnabert import _post_attention  # noqa: E402
from virnuc_core.models.dnabert_tiny import (  # noqa: E402
    FULL_CONFIG,
    TINY_CONFIG,
    random_dna,
    random_encoder,
)
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(lengths: np.ndarray, params_non_emb: int, layers: int, hidden: int) -> float:
    n = lengths.astype(np.float64)
    return float((n * 2 * params_non_emb).sum() + (layers * 4 * hidden * n * n).sum())


@torch.inference_mode()
def padded_forward(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain padded forward: (B, L) ids and bool mask -> (B, hidden) mean over real tokens."""
    b, n = ids.shape
    cfg = model.cfg
    heads, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    x = model.embeddings(ids)
    pos = torch.arange(n, device=ids.device)
    alibi = -model.slopes[:, None, None] * (pos[None, :] - pos[:, None]).abs()  # (H, L, L)
    keymask = torch.zeros(b, 1, 1, n, device=ids.device, dtype=torch.float32)
    keymask.masked_fill_(~mask[:, None, None, :], float("-inf"))
    bias = (alibi[None] + keymask).to(x.dtype)
    for layer in model.encoder.layer:
        qkv = layer.attention.self.Wqkv(x).view(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        out = layer.attention.output
        x = out.LayerNorm(out.dense(a.transpose(1, 2).reshape(b, n, -1)) + x)
        x = layer.mlp(x)
    w = mask.to(torch.float32)[..., None]
    return (x.float() * w).sum(1) / w.sum(1)


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the run to a CPU crash check."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=20000, help="frames for (b) and (c)")
    p.add_argument("--orig-frames", type=int, default=500, help="frames for (a) (slow)")
    p.add_argument("--batch-size", type=int, default=256, help="(b) frames per padded batch")
    p.add_argument("--token-budget", type=int, default=65536, help="(c) tokens per packed batch")
    p.add_argument("--backends", nargs="*", default=None, help="(c) default: padded flex [flash]")
    p.add_argument(
        "--compile-backends",
        nargs="*",
        default=None,
        help="(c) backends also run with compile=True (CUDA; default: padded)",
    )
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--repeats", type=int, default=2, help="timed passes; the fastest is kept")
    p.add_argument("--tokenizer-bases", type=int, default=2_000_000, help="BPE training DNA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny model, few frames (CPU crash check)")
    p.add_argument("--out", default=None, help="write results JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.orig_frames, args.batch_size = 64, 16, 16
        args.token_budget, args.repeats = 2048, 1
    return args


def packed_runs(args: argparse.Namespace, device: torch.device) -> list[tuple[str, bool]]:
    """(backend, compiled) pairs for mode (c); defaults depend on the device and flash-attn."""
    if args.backends:
        backends = args.backends
    elif device.type == "cuda":
        have_flash = importlib.util.find_spec("flash_attn") is not None
        backends = ["padded", "flex"] + (["flash"] if have_flash else [])
    else:
        backends = ["loop", "padded"]
    compile_backends = args.compile_backends
    if compile_backends is None:
        compile_backends = ["padded"] if device.type == "cuda" else []
    return [(b, False) for b in backends] + [(b, True) for b in compile_backends]


@dataclass
class Bench:
    """Everything the modes share: encoder, tokenised frames, and the rows/outputs collected."""

    args: argparse.Namespace
    device: torch.device
    cfg: object
    peak: float
    enc: object
    toks: list
    lengths: np.ndarray
    params: int
    rows: list[dict] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self, mode: str, backend: str, n: int, secs: float, ls: np.ndarray, **extra) -> None:
        """Append a timed row (tokens/s, TFLOP/s, MFU over real tokens) and print tokens/s."""
        tok = int(ls.sum())
        flops = count_flops(ls, self.params, self.cfg.num_hidden_layers, self.cfg.hidden_size)
        tflops = flops / secs / 1e12
        self.rows.append(
            {
                "mode": mode,
                "backend": backend,
                "frames": n,
                "tokens": tok,
                "seconds": round(secs, 4),
                "frames_per_s": n / secs,
                "tokens_per_s": tok / secs,
                "tflops": tflops,
                "mfu": tflops / self.peak,
                **extra,
            }
        )
        print(f"  {mode}/{backend}: {tok / secs:,.0f} tokens/s", flush=True)


def setup(args: argparse.Namespace) -> Bench:
    """Measure the matmul peak, build the random encoder, and tokenise the random frames."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TINY_CONFIG if args.quick else FULL_CONFIG
    peak = mfu.measure_matmul_tflops(torch.bfloat16)
    print(f"device {device}; measured bf16 matmul rate {peak:.1f} TFLOP/s", flush=True)
    enc = random_encoder(
        cfg,
        device,
        args.precision,
        "padded" if device.type == "cuda" else "loop",
        seed=args.seed,
        tokenizer_bases=100_000 if args.quick else args.tokenizer_bases,
    )
    frames = random_dna(np.random.default_rng(args.seed + 1), args.frames, 300, 500)
    t0 = time.perf_counter()
    toks = enc.tokenize(frames)
    t_tok = time.perf_counter() - t0
    lengths = np.array([len(t) for t in toks])
    params = sum(v.numel() for k, v in enc.model.state_dict().items() if k.startswith("encoder."))
    print(
        f"{args.frames} frames, tokens/frame min {lengths.min()} mean {lengths.mean():.1f} "
        f"max {lengths.max()}; tokenizer {len(frames) / t_tok:.0f} frames/s; "
        f"non-embedding params {params / 1e6:.1f} M",
        flush=True,
    )
    return Bench(args, device, cfg, peak, enc, toks, lengths, params)


def best_time(fn, repeats: int, device: torch.device, sync_after: bool = True, times=None):
    """Run ``fn`` ``repeats`` times; return the fastest wall time and the last result (every
    pass's time appended to ``times`` when given)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        if sync_after:
            sync(device)
        took = time.perf_counter() - t0
        best = min(best, took)
        if times is not None:
            times.append(took)
    return best, result


def set_backend(enc, name: str, device: torch.device) -> None:
    """Switch ``enc`` to backend ``name`` as load() would ('padded-auto': SDPA chooses)."""
    attention.PADDED_SDPA = None if name == "padded-auto" else attention.PADDED_SDPA_DEFAULT
    name = "padded" if name == "padded-auto" else name
    enc.backend = choose_backend(name, device.type, alibi=True)
    if device.type != "cuda":
        enc.backend = name


def run_original(bench: Bench) -> None:
    """(a) one sequence at a time through the fp32 reference."""
    enc, sub = bench.enc, bench.toks[: bench.args.orig_frames]
    enc.reference_embed_ids(sub[:4])  # warm-up
    best, bench.outputs["a"] = best_time(
        lambda: enc.reference_embed_ids(sub), bench.args.repeats, bench.device, sync_after=False
    )
    bench.record("a_original", "reference_fp32", len(sub), best, bench.lengths[: len(sub)])


def padded_batches(toks: list, batch_size: int, device: torch.device) -> list[tuple]:
    """Input-order batches of ``batch_size`` frames as (ids, bool mask), padded to the longest."""
    batches = []
    for s in range(0, len(toks), batch_size):
        group = toks[s : s + batch_size]
        width = max(len(t) for t in group)
        ids = np.zeros((len(group), width), dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=bool)
        for i, t in enumerate(group):
            ids[i, : len(t)], mask[i, : len(t)] = t, True
        batches.append((torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)))
    return batches


def run_padded(bench: Bench) -> None:
    """(b) plain padded bf16 batches through ``padded_forward``."""
    args, model = bench.args, bench.enc.model
    batches = padded_batches(bench.toks, args.batch_size, bench.device)
    padded_tokens = sum(int(i.numel()) for i, _ in batches)
    padded_forward(model, *batches[0])  # warm-up
    best, outs = best_time(
        lambda: [padded_forward(model, i, m) for i, m in batches], args.repeats, bench.device
    )
    bench.outputs["b"] = torch.cat(outs).cpu().numpy()
    bench.record(
        "b_padded_batches",
        f"sdpa_bs{args.batch_size}",
        len(bench.toks),
        best,
        bench.lengths,
        padding_overhead=padded_tokens / int(bench.lengths.sum()) - 1,
    )


def run_packed_one(bench: Bench, name: str, compiled: bool, groups: list, packed: list) -> None:
    """(c) one backend (optionally compiled): warm up, time, keep outputs in input order."""
    enc, device = bench.enc, bench.device
    label = name + ("+compile" if compiled else "")
    set_backend(enc, name, device)
    if compiled and not enc.compiled:  # what load(..., compile=True) does
        enc.model.post = TokenwiseCompiled(_post_attention, token_args=(0, 1))
        enc.compiled = True
    t0 = time.perf_counter()
    for b in packed[:2]:
        enc.embed_packed(b)  # warm-up (flex and compile=True compile here)
    sync(device)
    warm = time.perf_counter() - t0

    def one_pass():  # each batch's layout built afresh, as a job builds it once per batch
        return [enc.embed_packed(b) for b in packed if not b.cache.clear()]

    times: list[float] = []
    best, outs = best_time(one_pass, bench.args.repeats, device, times=times)
    attention.PADDED_SDPA = attention.PADDED_SDPA_DEFAULT
    out = np.empty((len(bench.toks), enc.dim), dtype=np.float32)
    for g, o in zip(groups, outs, strict=True):
        out[g] = o.cpu().numpy()
    bench.outputs[f"c_{label}"] = out
    bench.record(
        "c_packed",
        label,
        len(bench.toks),
        best,
        bench.lengths,
        batches=len(packed),
        warmup_seconds=round(warm, 2),
        pass_seconds=[round(t, 4) for t in times],
        first_pass_tokens_per_s=int(bench.lengths.sum()) / times[0],
    )


def run_packed(bench: Bench) -> None:
    """(c) ours on FFD-packed batches, once per backend; a failure is recorded, not raised."""
    groups = pack_ffd(bench.lengths.tolist(), bench.args.token_budget)
    packed = [make_batch([bench.toks[i] for i in g]).to(bench.device) for g in groups]
    for name, compiled in packed_runs(bench.args, bench.device):
        label = name + ("+compile" if compiled else "")
        try:
            run_packed_one(bench, name, compiled, groups, packed)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other backends
            print(f"  c_packed/{label}: FAILED {type(exc).__name__}: {exc}"[:2000], flush=True)
            bench.rows.append(
                {
                    "mode": "c_packed",
                    "backend": label,
                    "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                }
            )
            if bench.device.type == "cuda":
                torch.cuda.empty_cache()


def add_comparisons(rows: list[dict], outputs: dict[str, np.ndarray]) -> None:
    """Add speed-up over (a) and per-frame cosine to (a)'s embeddings to each row."""
    base = next(r for r in rows if r["mode"] == "a_original")["tokens_per_s"]
    n_a = len(outputs["a"])
    for r in rows:
        if "tokens_per_s" in r:
            r["speedup_vs_a"] = r["tokens_per_s"] / base
        key = {"b_padded_batches": "b"}.get(r["mode"]) or (
            f"c_{r['backend']}" if r["mode"] == "c_packed" else None
        )
        if key in outputs:
            c = cos_rows(outputs[key][:n_a], outputs["a"])
            r["cos_vs_a_mean"], r["cos_vs_a_min"] = float(c.mean()), float(c.min())


TABLE_COLUMNS = [
    "mode",
    "backend",
    "frames",
    "tokens",
    "seconds",
    "tokens_per_s",
    "frames_per_s",
    "tflops",
    "mfu",
    "speedup_vs_a",
    "cos_vs_a_min",
]


def results_payload(bench: Bench) -> dict:
    """The JSON written by ``--out``: machine, config, frame statistics, and the rows."""
    args, lengths = bench.args, bench.lengths
    return {
        "bench": "dnabert_throughput",
        "machine": mfu.machine_info(),
        "config": bench.cfg.to_dict(),
        "quick": args.quick,
        "precision": args.precision,
        "bf16_matmul_tflops": bench.peak,
        "token_budget": args.token_budget,
        "batch_size": args.batch_size,
        "frames": {
            "n": args.frames,
            "orig_n": args.orig_frames,
            "bases": [300, 500],
            "tokens_mean": float(lengths.mean()),
            "tokens_min": int(lengths.min()),
            "tokens_max": int(lengths.max()),
            "tokenizer": "BPE (vocab 4096 full / 128 quick) trained on seeded random DNA",
        },
        "flops_per_token": "2 * non-embedding params + layers * 4 * seq_len * hidden",
        "non_embedding_params": bench.params,
        "results": bench.rows,
    }


def main(argv=None) -> int:
    """Run modes (a), (b), (c); print the table; write JSON; 1 if any backend failed."""
    bench = setup(parse_args(argv))
    run_original(bench)
    run_padded(bench)
    run_packed(bench)
    add_comparisons(bench.rows, bench.outputs)
    mfu.print_table(bench.rows, TABLE_COLUMNS)
    mfu.write_json(bench.args.out, results_payload(bench))
    return 1 if any("error" in r for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
