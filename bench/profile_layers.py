"""Where ESM-2 packed inference spends its time: torch.profiler over a few batches of ours.

A random-weight ESM-2 (default esm2_t36_3B), bf16, packed batches of the protein set of
bench/esm2_throughput.py (64k-token budget, random order), warm-up batches first, then a few
batches profiled. Every transformer layer and every batch is wrapped in a
``record_function`` range; each GPU kernel is attributed to the batch and layer whose range its
launch (``cudaLaunchKernel`` / ``cuLaunchKernel``, matched by correlation id) falls in, or, with
no launch event, whose GPU-side range holds it.

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

    python bench/profile_layers.py --out bench/results/profile_layers_h100.json   # ~1.5 min
    python bench/profile_layers.py --model-size 8M --quick                       # CPU smoke run
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402
from esm2_fidelity_gpu import chunk_proteins  # noqa: E402

from virnuc_core.models.esm2 import ESMEncoder  # noqa: E402
from virnuc_core.models.esm2_load import ESM2_ARCH, random_model  # noqa: E402
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402

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
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--token-budget", type=int, default=65536)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--compile", action="store_true", help="profile the compiled variant")
    ap.add_argument("--n", type=int, default=20000, help="proteins in the set")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batches", type=int, default=3, help="batches profiled")
    ap.add_argument("--per-layer", action="store_true", help="print every layer's row")
    ap.add_argument("--trace", help="also keep the Chrome trace here (open in Perfetto)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small set and budget (smoke run)")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.token_budget, args.warmup, args.batches = 300, 4096, 1, 2
    return args


def no_ref():
    raise RuntimeError("the fp32 reference path is not used by this bench")


def build(args, device):
    """(encoder, shuffled packed batches as (PackedBatch, tokens, sum of L^2, proteins))."""
    name, arch = ESM2_ARCH[args.model_size]
    fair, alphabet = random_model(args.seed, device, **arch)
    opts = {"precision": args.precision, "backend": args.backend, "compile": args.compile}
    # with a reference factory the encoder keeps no hold on the fp32 model (never called here)
    enc = ESMEncoder(fair, alphabet, spec=name, device=device, reference_factory=no_ref, **opts)
    del fair
    tokens = enc.tokenize(chunk_proteins(args.n, args.seed))
    groups = pack_ffd([len(t) for t in tokens], args.token_budget)
    order = np.random.default_rng(args.seed).permutation(len(groups))
    batches = []
    for g in (groups[i] for i in order[: args.warmup + args.batches]):
        lengths = [len(tokens[i]) for i in g]
        b = make_batch([tokens[i] for i in g])
        b = b.pin_memory() if device.type == "cuda" else b
        batches.append((b, sum(lengths), sum(n * n for n in lengths), len(lengths)))
    return enc, batches


def annotate_layers(enc: ESMEncoder) -> None:
    """Wrap each layer's forward in a ``layer_NN`` profiler range (this process only)."""
    for i, layer in enumerate(enc.model.layers):

        def forward(*a, _f=layer.forward, _name=f"layer_{i:02d}", **k):
            with record_function(_name):
                return _f(*a, **k)

        layer.forward = forward


def run_profile(enc, batches, args, device, trace: Path) -> list[float]:
    """Warm up, time the profiled batches without the profiler, then profile them."""

    def step(b):
        return enc.embed_packed(b.to(device, non_blocking=True)).cpu()

    for b, *_ in batches[: args.warmup]:
        step(b)
    unprofiled = []
    for b, *_ in batches[args.warmup :]:
        mfu._sync()
        t0 = time.perf_counter()
        step(b)
        unprofiled.append(1000 * (time.perf_counter() - t0))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i, (b, *_) in enumerate(batches[args.warmup :]):
            with record_function(f"batch_{i}"):
                step(b)
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


class Ranges:
    """Non-overlapping named ranges (one kind: batch_ or layer_), searchable by time."""

    def __init__(self, events: list[dict], cat: str, prefix: str):
        rs = sorted(
            (e["ts"], e["ts"] + e["dur"], int(e["name"][len(prefix) :]))
            for e in events
            if e.get("cat") == cat and str(e.get("name", "")).startswith(prefix)
        )
        self.starts = [r[0] for r in rs]
        self.ranges = rs

    def find(self, t: float | None) -> int | None:
        """Index (the number in the range's name) of the range holding ``t``."""
        if t is None:
            return None
        i = bisect.bisect_right(self.starts, t) - 1
        return self.ranges[i][2] if i >= 0 and t < self.ranges[i][1] else None


def attribute(events: list[dict], dev: list[dict]) -> dict:
    """Give every device event its batch and layer; returns the CPU batch ranges (us)."""
    (cpu_b, cpu_l), (gpu_b, gpu_l) = (
        (Ranges(events, cat, "batch_"), Ranges(events, cat, "layer_"))
        for cat in ("user_annotation", "gpu_user_annotation")
    )
    for d in dev:
        if d["launch"] is not None:
            d["batch"], d["layer"] = cpu_b.find(d["launch"]), cpu_l.find(d["launch"])
        else:
            d["batch"], d["layer"] = gpu_b.find(d["ts"]), gpu_l.find(d["ts"])
    return {i: (s, e) for s, e, i in cpu_b.ranges}


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


def summarise(dev, batch_ranges, cuda) -> dict:
    """Per batch, per layer and per category milliseconds, averaged over the profiled batches."""
    nb = max(1, len(batch_ranges))
    per_cat, outside, per_layer = defaultdict(float), defaultdict(float), defaultdict(dict)
    kernels = defaultdict(lambda: [0.0, 0, ""])
    walls, busys = [], []
    for i, (s, e) in sorted(batch_ranges.items()):
        mine = [d for d in dev if d["batch"] == i]
        walls.append((e - s) / 1000)
        busys.append(busy_ms(mine, cuda))
        for d in mine:
            ms = d["dur"] / 1000 / nb
            per_cat[d["category"]] += ms
            where = per_layer[d["layer"]] if d["layer"] is not None else outside
            where[d["category"]] = where.get(d["category"], 0.0) + ms
            k = kernels[d["name"]]
            k[0], k[1], k[2] = k[0] + ms, k[1] + 1, d["category"]
    per_cat["idle"] = float(np.mean(walls) - np.mean(busys)) if walls else 0.0
    return {
        "wall_ms": float(np.mean(walls)) if walls else 0.0,
        "wall_ms_per_batch": walls,
        "busy_ms": float(np.mean(busys)) if busys else 0.0,
        "kernel_sum_ms": sum(v for c, v in per_cat.items() if c != "idle"),
        "per_category_ms": {c: per_cat.get(c, 0.0) for c in CATEGORIES},
        "per_layer_ms": dict(sorted(per_layer.items())),
        "outside_layers_ms": dict(outside),
        "kernels": kernels,
        "unattributed": sum(1 for d in dev if d["batch"] is None),
    }


def ideal_rows(summary: dict, enc: ESMEncoder, work: list[tuple], peak: float) -> tuple:
    """Category table: measured ms, ideal ms at the matmul rate, gap, MFU points lost."""
    nb = max(1, len(work))
    tokens = sum(w[1] for w in work) / nb
    sq = sum(w[2] for w in work) / nb
    model, linear, p_nonemb = enc.model, 0, 0
    for n, p in model.named_parameters():
        linear += p.numel() if n.startswith("layers.") and p.dim() == 2 else 0  # GEMM weights
        p_nonemb += p.numel() if n.startswith(("layers.", "emb_layer_norm_after")) else 0
    attn_flops = 4.0 * model.dim * len(model.layers) * sq
    ideal = {"gemm": 2.0 * linear * tokens / peak / 1e9, "attention": attn_flops / peak / 1e9}
    wall = summary["wall_ms"]
    rows = []
    for c in CATEGORIES:
        ms = summary["per_category_ms"][c]
        gap = ms - ideal.get(c, 0.0)
        rows.append({"category": c, "ms_per_batch": ms, "pct_of_wall": 100 * ms / wall,
                     "ideal_ms": ideal.get(c, 0.0), "gap_ms": gap,
                     "mfu_points_lost": 100 * gap / wall})  # fmt: skip
    model_ms = (2.0 * p_nonemb * tokens + attn_flops) / peak / 1e9
    gemm_ms, attn_ms = (summary["per_category_ms"][c] or np.nan for c in ("gemm", "attention"))
    totals = {
        "tokens_per_batch": tokens,
        "model_ideal_ms": model_ms,
        "mfu_profiled": model_ms / wall,
        "gemm_tflops_achieved": 2.0 * linear * tokens / gemm_ms / 1e9,
        "attention_tflops_achieved": attn_flops / attn_ms / 1e9,
        "matmul_tflops_peak": peak,
        "linear_weights": linear,
        "nonembedding_parameters": p_nonemb,
    }
    return rows, totals


def layer_rows(summary: dict) -> list[dict]:
    """One row per layer: ms per batch by category (idle is not attributable to a layer)."""
    rows = []
    for layer, cats in summary["per_layer_ms"].items():
        row = {"layer": layer, "total_ms": sum(cats.values())}
        row.update({c: cats.get(c, 0.0) for c in CATEGORIES[:-1]})
        rows.append(row)
    out = summary["outside_layers_ms"]
    rows.append({"layer": "outside", "total_ms": sum(out.values()),
                 **{c: out.get(c, 0.0) for c in CATEGORIES[:-1]}})  # fmt: skip
    return rows


def top_kernels(summary: dict, nb: int, k: int = 10) -> list[dict]:
    total = summary["kernel_sum_ms"] or 1.0
    top = sorted(summary["kernels"].items(), key=lambda kv: -kv[1][0])[:k]
    return [{"kernel": name[:90], "category": cat, "calls_per_batch": calls / nb,
             "ms_per_batch": ms, "pct_of_kernels": 100 * ms / total}
            for name, (ms, calls, cat) in top]  # fmt: skip


def rounded(rows: list[dict]) -> list[dict]:
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def report(cats, totals, layers, top, summary, unprofiled, args) -> None:
    print(f"\nper batch ({totals['tokens_per_batch']:,.0f} tokens): profiled wall "
          f"{summary['wall_ms']:.1f} ms (without the profiler {np.mean(unprofiled):.1f} ms), "
          f"kernels busy {summary['busy_ms']:.1f} ms; MFU {100 * totals['mfu_profiled']:.1f}%"
          )  # fmt: skip
    mfu.print_table(rounded(cats))
    g, a = totals["gemm_tflops_achieved"], totals["attention_tflops_achieved"]
    print(f"GEMMs run at {g:.4g} TFLOP/s, attention at {a:.4g} TFLOP/s; matmul rate "
          f"{totals['matmul_tflops_peak']:.4g} TFLOP/s")  # fmt: skip
    body = [r for r in layers if r["layer"] != "outside"]
    if body:
        tot = [r["total_ms"] for r in body]
        mean = {c: float(np.mean([r[c] for r in body])) for c in CATEGORIES[:-1]}
        print(f"\n{len(body)} layers: {np.mean(tot):.2f} ms each on average "
              f"(min {min(tot):.2f}, max {max(tot):.2f})")  # fmt: skip
        shown = layers if args.per_layer else [{"layer": "mean", "total_ms": np.mean(tot), **mean},
                                               layers[-1]]  # fmt: skip
        mfu.print_table(rounded(shown))
    print("\ntop kernels")
    mfu.print_table(rounded(top))
    if summary["unattributed"]:
        print(f"note: {summary['unattributed']} kernels outside every batch range (not counted)")


def main(argv=None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    notes = [] if cuda else ["CPU run: no CUDA profiler activity; 'kernels' are aten ops' self "
                             "times, backend varlen/flex fall back to loop, fp32 only"]  # fmt: skip
    peak = mfu.measure_matmul_tflops(torch.bfloat16, n=8192 if cuda else 512)
    enc, batches = build(args, device)
    annotate_layers(enc)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(args.trace) if args.trace else Path(tmp) / "trace.json"
        unprofiled = run_profile(enc, batches, args, device, trace)
        events = json.loads(trace.read_text())["traceEvents"]
    dev = gpu_events(events) if cuda else cpu_self_times(events)
    summary = summarise(dev, attribute(events, dev), cuda)
    work = batches[args.warmup :]
    cats, totals = ideal_rows(summary, enc, work, peak)
    layers, top = layer_rows(summary), top_kernels(summary, len(work))
    report(cats, totals, layers, top, summary, unprofiled, args)
    for n in notes:
        print("note:", n)
    payload = {
        "bench": "profile_layers", "machine": mfu.machine_info(),
        "model": ESM2_ARCH[args.model_size][0], "settings": vars(args),
        "encoder": enc.describe(), "patterns": PATTERNS, "notes": notes,
        "wall_ms": summary["wall_ms"], "wall_ms_per_batch": summary["wall_ms_per_batch"],
        "wall_ms_unprofiled": unprofiled, "busy_ms": summary["busy_ms"], **totals,
        "categories": cats, "layers": layers, "top_kernels": top,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "unattributed_kernels": summary["unattributed"],
    }  # fmt: skip
    mfu.write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
