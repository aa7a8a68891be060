"""DNABERT-S fidelity on a GPU: bf16 packed path vs the fp32 one-at-a-time reference.

Full-size DNABERT-S architecture (12 layers, 768 wide, 12 heads, intermediate 3072, vocab 4096)
with seeded random weights, and a BPE tokenizer of vocab 4096 trained in code (``tokenizers``) on
seeded random DNA (see virnuc_core/models/dnabert_tiny.py). Frames are random DNA of 300-500 bases;
with this tokenizer they are 60-113 tokens each (mean 85; [CLS] and [SEP] included), somewhat fewer
than the real DNABERT-S tokenizer gives on real DNA (~100-130 per 500 bases), as random DNA
compresses differently.

For every CUDA attention backend (padded, flex, and flash where flash-attn is importable), the
packed embeddings (mean over all tokens), and those of ``compile=True`` with the padded
backend, are compared with the reference by cosine similarity,
per frame; the run fails unless mean >= 0.999 and min >= 0.99 for each backend.

    python bench/dnabert_fidelity_gpu.py --out bench/results/dnabert_fidelity.json
    python bench/dnabert_fidelity_gpu.py --quick          # CPU crash check (tiny model)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mfu  # noqa: E402  (bench/mfu.py, next to this file)

from virnuc_core.attention import choose_backend  # noqa: E402
from virnuc_core.models.dnabert import _post_attention  # noqa: E402
from virnuc_core.models.dnabert_tiny import (  # noqa: E402
    FULL_CONFIG,
    TINY_CONFIG,
    random_dna,
    random_encoder,
)
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def embed_all(enc, toks, budget: int) -> np.ndarray:
    out = np.empty((len(toks), enc.dim), dtype=np.float32)
    for idx in pack_ffd([len(t) for t in toks], budget):
        batch = make_batch([toks[i] for i in idx]).to(enc.device)
        out[idx] = enc.embed_packed(batch).cpu().numpy()
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="frames (default 1000)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--backends", nargs="*", default=None, help="default: padded flex [flash]")
    p.add_argument("--token-budget", type=int, default=65536)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mean-min", type=float, default=0.999)
    p.add_argument("--min-min", type=float, default=0.99)
    p.add_argument("--quick", action="store_true", help="tiny model, 40 frames (CPU crash check)")
    p.add_argument("--out", default=None, help="write results JSON here")
    return p.parse_args(argv)


def backend_runs(args: argparse.Namespace, device: torch.device) -> list[tuple[str, bool]]:
    """(backend, compiled) pairs to check; defaults depend on the device and flash-attn."""
    if args.backends:
        backends = args.backends
    elif device.type == "cuda":
        have_flash = importlib.util.find_spec("flash_attn") is not None
        backends = ["padded", "flex"] + (["flash"] if have_flash else [])
    else:
        backends = ["loop", "padded"]
    return [(b, False) for b in backends] + ([("padded", True)] if device.type == "cuda" else [])


def build(args: argparse.Namespace, device: torch.device, cfg, n: int):
    """Random encoder and ``n`` tokenised random frames; returns (enc, toks, lengths)."""
    t0 = time.perf_counter()
    enc = random_encoder(
        cfg,
        device,
        args.precision,
        "padded" if device.type == "cuda" else "loop",
        seed=args.seed,
        tokenizer_bases=2_000_000 if not args.quick else 100_000,
    )
    frames = random_dna(np.random.default_rng(args.seed + 1), n, 300, 500)
    toks = enc.tokenize(frames)
    lengths = np.array([len(t) for t in toks])
    t_build = time.perf_counter() - t0
    print(
        f"device {device}, precision {enc.precision}, {n} frames, tokens/frame "
        f"min {lengths.min()} mean {lengths.mean():.1f} max {lengths.max()} "
        f"(built in {t_build:.1f} s)",
        flush=True,
    )
    return enc, toks, lengths


def run_reference(enc, toks) -> tuple[np.ndarray, float]:
    """fp32 one-at-a-time embeddings and the seconds they took."""
    t0 = time.perf_counter()
    ref = enc.reference_embed_ids(toks)
    t_ref = time.perf_counter() - t0
    print(f"fp32 reference: {t_ref:.1f} s", flush=True)
    return ref, t_ref


def time_backend(enc, toks, name: str, compiled: bool, budget: int) -> tuple[np.ndarray, float]:
    """Switch ``enc`` to one backend (optionally compiled), warm up, and time the packed path."""
    device = enc.device
    enc.backend = choose_backend(name, device.type, True) if device.type == "cuda" else name
    if compiled and not enc.compiled:  # what load(..., compile=True) does
        enc.model.post = torch.compile(_post_attention, dynamic=True)
        enc.compiled = True
    embed_all(enc, toks[:64], budget)  # warm-up (flex compiles here)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = embed_all(enc, toks, budget)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def check_backend(enc, toks, ref, args, name: str, compiled: bool, n: int) -> dict:
    """One result row: cosines to ``ref`` and pass/fail, or the error if the backend failed."""
    label = name + ("+compile" if compiled else "")
    try:
        out, secs = time_backend(enc, toks, name, compiled, args.token_budget)
    except Exception as exc:  # noqa: BLE001 - record, fail, and go on with the other backends
        print(f"{label}: FAILED {type(exc).__name__}: {exc}"[:2000], flush=True)
        if enc.device.type == "cuda":
            torch.cuda.empty_cache()
        return {"backend": label, "error": f"{type(exc).__name__}: {str(exc)[:500]}", "pass": False}
    cos = cosines(out, ref)
    return {
        "backend": label,
        "precision": enc.precision,
        "n": n,
        "mean_cos": float(cos.mean()),
        "min_cos": float(cos.min()),
        "p01_cos": float(np.quantile(cos, 0.01)),
        "seconds": secs,
        "pass": bool(cos.mean() >= args.mean_min and cos.min() >= args.min_min),
    }


def results_payload(args, cfg, n: int, lengths, t_ref: float, rows: list[dict], ok: bool) -> dict:
    """The JSON written by ``--out``."""
    return {
        "bench": "dnabert_fidelity_gpu",
        "machine": mfu.machine_info(),
        "config": cfg.to_dict(),
        "quick": args.quick,
        "seed": args.seed,
        "frames": {
            "n": n,
            "bases": [300, 500],
            "tokens_min": int(lengths.min()),
            "tokens_mean": float(lengths.mean()),
            "tokens_max": int(lengths.max()),
            "tokenizer": "BPE trained in code on seeded random DNA (tokenizers library)",
        },
        "thresholds": {"mean": args.mean_min, "min": args.min_min},
        "reference_seconds": t_ref,
        "results": rows,
        "pass": ok,
    }


def main(argv=None) -> int:
    """Compare every backend with the fp32 reference; print, write JSON; 1 unless all pass."""
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TINY_CONFIG if args.quick else FULL_CONFIG
    n = 40 if args.quick else args.n
    runs = backend_runs(args, device)
    enc, toks, lengths = build(args, device, cfg, n)
    ref, t_ref = run_reference(enc, toks)
    rows = [check_backend(enc, toks, ref, args, name, c, n) for name, c in runs]
    ok = all(r["pass"] for r in rows)
    mfu.print_table(
        rows,
        ["backend", "precision", "n", "mean_cos", "min_cos", "p01_cos", "seconds", "pass", "error"],
    )
    mfu.write_json(args.out, results_payload(args, cfg, n, lengths, t_ref, rows, ok))
    if not ok:
        print("FAIL: a backend is below the thresholds", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
