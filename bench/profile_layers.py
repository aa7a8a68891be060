"""Where an ESM-2 embed job's GPU time goes: torch.profiler over a few batches of the job's loop.

A random-weight ESM-2 (default esm2_t36_3B) run as an embed job runs it (the job's encoder with
the schema's settings, ``--set`` changes; the job's packer and device loop) over packed batches
of chunk-shaped proteins (``--token-budget``), warm-up batches first, then a few batches
profiled, each in a ``record_function`` range; each GPU kernel is attributed to the batch whose
range its launch (``cudaLaunchKernel`` / ``cuLaunchKernel``, matched by correlation id) falls
in, or, with no launch event, whose GPU-side range holds it.

Categories (first pattern that matches the lower-cased kernel name wins):

  memcpy       copy-engine events (gpu_memcpy / gpu_memset): batch to the GPU, pooled to the host
  attention    flash|fmha|attention|attn|sdpa|softmax, Triton templates that are not matmuls
               (FlashAttention 2/3, PyTorch flash/efficient/cuDNN SDPA, FlexAttention)
  gemm         gemm|gemv|nvjet|xmma|cutlass|cublas|splitkreduce|wgmma|Triton mm templates
               (cuBLAS/cuBLASLt incl. its H100 nvjet kernels, CUTLASS)
  layernorm    layer_norm|layernorm (eager LayerNorm kernels, Inductor's fused *_native_layer_norm)
  other        index|embedding|scatter|gather|reduce_kernel (embedding, index_add of the pooling,
               index_copy/select of the padded layout, sums), and whatever matches nothing
  elementwise  elementwise|triton_poi|triton_per|triton_red|catarray|gelu|copy|fill: GELU,
               rotary (mul, cat of rotate_half), residual adds, casts, Inductor pointwise
  idle         wall time of the batch with no kernel running (union of kernel intervals): CPU-side
               launch gaps, host syncs, Python overhead

Ideal times use the bf16 8192^3 matmul rate measured here: GEMMs 2 x (linear weights) x tokens,
attention 4 x L^2 x dim per protein and layer (QK^T and AV), other categories 0. gap = measured
- ideal; MFU points lost = gap / wall (they add up to 100 - MFU, up to the biases and LayerNorm
parameters counted in MFU's FLOPs). On the CPU (smoke run) the "kernels" are the aten ops' self
times and idle is wall minus their sum.

    python -m bench.profile_layers --out bench/results/profile_layers_h200.json    # ~1.5 min
    python -m bench.profile_layers --set attention_backend=varlen --out ...
    python -m bench.profile_layers --model-size 8M --quick                       # CPU smoke run
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench import _harness as h
from virnuc_core.engine.models.esm2_load import ESM2_ARCH

GEMM = (
    r"gemm|gemv|nvjet|xmma|cutlass|cublas|splitkreduce|wgmma|triton_tem_.*mm"
    r"|^aten::(addmm|mm|bmm|matmul|linear)$"
)
ELEMENTWISE = (
    r"elementwise|triton_(poi|per|red)|catarray|gelu|copy|fill"
    r"|^aten::(add|mul|neg|cat|sin|cos|sub|div|clamp|where|masked_fill|to|_to_copy|zero_|zeros)_?$"
)
PATTERNS = [  # (category, pattern on the lower-cased kernel or aten op name); first match wins
    ("memcpy", r"memcpy|memset"),
    ("attention", r"flash|fmha|attention|attn|sdpa|softmax|triton_tem_(?!.*mm)"),
    ("gemm", GEMM),
    ("layernorm", r"layer_?norm"),
    ("other", r"index|embedding|scatter|gather|reduce_kernel|^aten::(sum|all|any)$"),
    ("elementwise", ELEMENTWISE),
    ("other", r""),  # anything else
]
CATEGORIES = ["gemm", "attention", "layernorm", "elementwise", "other", "memcpy", "idle"]
COMPILED = [(c, re.compile(p)) for c, p in PATTERNS]


def classify(name: str, copy_engine: bool = False) -> str:
    """The category of one kernel (or, on the CPU, one aten op) by name."""
    if copy_engine:
        return "memcpy"
    low = name.lower()
    return next(c for c, p in COMPILED if p.search(low))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--token-budget", type=int, default=65536)
    h.add_settings_arg(ap)
    ap.add_argument("--n", type=int, default=20000, help="proteins in the set")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batches", type=int, default=3, help="batches profiled")
    ap.add_argument("--trace", help="also keep the Chrome trace here (open in Perfetto)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small set and budget (smoke run)")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.token_budget, args.warmup, args.batches = 300, 4096, 1, 2
    return args


def build(args):
    """(encoder, its settings, batches, FLOP counts of the model: linear weights, non-embedding
    parameters, layers, width)."""
    name, arch = ESM2_ARCH[args.model_size]
    fair, alphabet = h.random_esm(args.model_size, args.seed)
    params = dict(fair.named_parameters())
    counts = {"linear_weights": sum(p.numel() for n, p in params.items()
                                    if n.startswith("layers.") and p.dim() == 2),
              "nonembedding_parameters": sum(p.numel() for n, p in params.items()
                                             if n.startswith(("layers.", "emb_layer_norm_after"))),
              "layers": arch["num_layers"], "dim": arch["embed_dim"]}  # fmt: skip
    settings = h.job_settings("esm", name, [*args.set, ("token_budget.esm", args.token_budget)])
    enc = h.esm_encoder(fair, settings)
    del fair, params
    tokens = enc.tokenize(h.chunk_proteins(args.n, args.seed))
    batches = h.job_batches(tokens, args.token_budget)[: args.warmup + args.batches]
    return enc, settings, batches, counts


def run_profile(enc, batches, args, trace: Path) -> list[float]:
    """Warm up, time the profiled batches without the profiler, then profile them."""
    h.run_batches(enc.embed_packed, batches[: args.warmup])
    profiled = batches[args.warmup :]
    unprofiled = [1000 * h.run_batches(enc.embed_packed, [b]).seconds for b in profiled]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if h.CUDA else [])
    with profile(activities=acts) as prof:
        for i, b in enumerate(profiled):
            with record_function(f"batch_{i}"):
                h.run_batches(enc.embed_packed, [b])
    prof.export_chrome_trace(str(trace))
    return unprofiled


def cpu_self_times(events: list[dict]) -> list[dict]:
    """aten ops with their self time (children subtracted): the CPU stand-in for kernels.

    An op is classified by its outermost aten op (SDPA's bmm counts as attention, not gemm),
    or by its own name where the outermost one falls in "other".
    """
    ops = [e for e in events if e.get("cat") == "cpu_op" and e.get("ph") == "X"]
    ops.sort(key=lambda e: (str(e["tid"]), e["ts"], -e["dur"]))
    out, stack = [], []
    for e in ops:
        rec = {"name": e["name"], "ts": e["ts"], "dur": e["dur"], "launch": e["ts"]}
        while stack and (stack[-1][0] != e["tid"] or stack[-1][1] <= e["ts"]):
            stack.pop()
        rec["root"] = stack[0][2]["root"] if stack else e["name"]
        if stack:
            stack[-1][2]["dur"] -= e["dur"]
        stack.append((e["tid"], e["ts"] + e["dur"], rec))
        out.append(rec)
    for r in out:
        cat = classify(r.pop("root"))
        r["dur"], r["category"] = max(0.0, r["dur"]), cat if cat != "other" else classify(r["name"])
    return out


def gpu_events(events: list[dict]) -> list[dict]:
    """Kernels and copies with their launch time on the CPU (None if no launch event)."""
    launch = {}
    for e in events:
        if str(e.get("cat", "")).lower() in ("cuda_runtime", "cuda_driver"):
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                launch[corr] = e["ts"]
    out = []
    for e in events:
        cat = str(e.get("cat", "")).lower()
        if e.get("ph") == "X" and cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            corr = (e.get("args") or {}).get("correlation")
            cat_name = classify(e["name"], copy_engine=cat != "kernel")
            out.append({"name": e["name"], "ts": e["ts"], "dur": e["dur"],
                        "launch": launch.get(corr), "category": cat_name})  # fmt: skip
    return out


def batch_ranges(events: list[dict], cat: str) -> list[tuple[float, float, int]]:
    """(start, end, i) of the ``batch_i`` ranges of kind ``cat``, by start."""
    mine = [
        e for e in events if e.get("cat") == cat and str(e.get("name", "")).startswith("batch_")
    ]
    return sorted((e["ts"], e["ts"] + e["dur"], int(e["name"][len("batch_") :])) for e in mine)


def find(ranges: list[tuple[float, float, int]], t: float | None) -> int | None:
    """The number of the range holding ``t``."""
    if t is None:
        return None
    i = bisect.bisect_right([r[0] for r in ranges], t) - 1
    return ranges[i][2] if i >= 0 and t < ranges[i][1] else None


def attribute(events: list[dict], dev: list[dict]) -> dict:
    """Give every device event its batch; returns the CPU batch ranges (us)."""
    cpu, gpu = (batch_ranges(events, c) for c in ("user_annotation", "gpu_user_annotation"))
    for d in dev:
        d["batch"] = find(cpu, d["launch"]) if d["launch"] is not None else find(gpu, d["ts"])
    return {i: (s, e) for s, e, i in cpu}


def busy_ms(dev: list[dict], cuda: bool) -> float:
    """GPU: union of kernel intervals; CPU: sum of op self times."""
    if not cuda:
        return sum(d["dur"] for d in dev) / 1000
    total, end = 0.0, -np.inf
    for d in sorted(dev, key=lambda d: d["ts"]):
        s, e = d["ts"], d["ts"] + d["dur"]
        if e > end:
            total += e - max(s, end)
            end = e
    return total / 1000


def summarise(dev, ranges, cuda) -> dict:
    """Per batch and per category milliseconds, averaged over the profiled batches."""
    nb = max(1, len(ranges))
    per_cat, kernels = defaultdict(float), defaultdict(lambda: [0.0, 0, ""])
    walls, busys = [], []
    for i, (s, e) in sorted(ranges.items()):
        mine = [d for d in dev if d["batch"] == i]
        walls.append((e - s) / 1000)
        busys.append(busy_ms(mine, cuda))
        for d in mine:
            ms = d["dur"] / 1000 / nb
            per_cat[d["category"]] += ms
            k = kernels[d["name"]]
            k[0], k[1], k[2] = k[0] + ms, k[1] + 1, d["category"]
    per_cat["idle"] = float(np.mean(walls) - np.mean(busys)) if walls else 0.0
    return {
        "wall_ms": float(np.mean(walls)) if walls else 0.0,
        "wall_ms_per_batch": walls,
        "busy_ms": float(np.mean(busys)) if busys else 0.0,
        "kernel_sum_ms": sum(v for c, v in per_cat.items() if c != "idle"),
        "per_category_ms": {c: per_cat.get(c, 0.0) for c in CATEGORIES},
        "kernels": kernels,
        "unattributed": sum(1 for d in dev if d["batch"] is None),
    }


def ideal_rows(summary: dict, counts: dict, batches: list, peak: float) -> tuple:
    """Category table: measured ms, ideal ms at the matmul rate, gap, MFU points lost."""
    lengths = [b.lengths().double() for _, b in batches]
    tokens = float(sum(x.sum() for x in lengths)) / max(1, len(batches))
    sq = float(sum((x * x).sum() for x in lengths)) / max(1, len(batches))
    attn_flops = 4.0 * counts["dim"] * counts["layers"] * sq
    ideal = {"gemm": 2.0 * counts["linear_weights"] * tokens / peak / 1e9,
             "attention": attn_flops / peak / 1e9}  # fmt: skip
    wall, rows = summary["wall_ms"], []
    for c in CATEGORIES:
        ms = summary["per_category_ms"][c]
        gap = ms - ideal.get(c, 0.0)
        rows.append({"category": c, "ms_per_batch": ms, "pct_of_wall": 100 * ms / wall,
                     "ideal_ms": ideal.get(c, 0.0), "gap_ms": gap,
                     "mfu_points_lost": 100 * gap / wall})  # fmt: skip
    model_ms = (2.0 * counts["nonembedding_parameters"] * tokens + attn_flops) / peak / 1e9
    gemm_ms, attn_ms = (summary["per_category_ms"][c] or np.nan for c in ("gemm", "attention"))
    totals = {"tokens_per_batch": tokens, "model_ideal_ms": model_ms,
              "mfu_profiled": model_ms / wall,
              "gemm_tflops_achieved": 2.0 * counts["linear_weights"] * tokens / gemm_ms / 1e9,
              "attention_tflops_achieved": attn_flops / attn_ms / 1e9,
              "matmul_tflops_peak": peak, **counts}  # fmt: skip
    return rows, totals


def top_kernels(summary: dict, nb: int, k: int = 10) -> list[dict]:
    total = summary["kernel_sum_ms"] or 1.0
    top = sorted(summary["kernels"].items(), key=lambda kv: -kv[1][0])[:k]
    return [{"kernel": name[:90], "category": cat, "calls_per_batch": calls / nb,
             "ms_per_batch": ms, "pct_of_kernels": 100 * ms / total}
            for name, (ms, calls, cat) in top]  # fmt: skip


def rounded(rows: list[dict]) -> list[dict]:
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    notes = [] if h.CUDA else ["CPU run: no CUDA profiler activity; 'kernels' are aten ops' "
                               "self times, fp32 only"]  # fmt: skip
    peak = h.measure_matmul_tflops(torch.bfloat16, n=8192 if h.CUDA else 512)
    enc, settings, batches, counts = build(args)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(args.trace) if args.trace else Path(tmp) / "trace.json"
        unprofiled = run_profile(enc, batches, args, trace)
        events = json.loads(trace.read_text())["traceEvents"]
    dev = gpu_events(events) if h.CUDA else cpu_self_times(events)
    summary = summarise(dev, attribute(events, dev), h.CUDA)
    work = batches[args.warmup :]
    cats, totals = ideal_rows(summary, counts, work, peak)
    top = top_kernels(summary, len(work))
    print(
        f"\nper batch ({totals['tokens_per_batch']:,.0f} tokens): profiled wall "
        f"{summary['wall_ms']:.1f} ms (without the profiler {np.mean(unprofiled):.1f} ms), "
        f"kernels busy {summary['busy_ms']:.1f} ms; MFU {100 * totals['mfu_profiled']:.1f}%"
    )
    h.print_table(rounded(cats))
    print(
        f"GEMMs run at {totals['gemm_tflops_achieved']:.4g} TFLOP/s, attention at "
        f"{totals['attention_tflops_achieved']:.4g} TFLOP/s; matmul rate {peak:.4g} TFLOP/s"
    )
    print("\ntop kernels")
    h.print_table(rounded(top))
    for n in notes + ([f"{summary['unattributed']} kernels outside every batch range (not "
                       "counted)"] if summary["unattributed"] else []):  # fmt: skip
        print("note:", n)
    h.write_json(args.out, {
        "bench": "profile_layers", "machine": h.machine_info(),
        "model": ESM2_ARCH[args.model_size][0], "args": vars(args),
        "settings": settings.as_dict(), "encoder": enc.describe(), "patterns": PATTERNS,
        "notes": notes, "wall_ms": summary["wall_ms"],
        "wall_ms_per_batch": summary["wall_ms_per_batch"], "wall_ms_unprofiled": unprofiled,
        "busy_ms": summary["busy_ms"], **totals, "categories": cats, "top_kernels": top,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if h.CUDA else None,
        "unattributed_kernels": summary["unattributed"],
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
