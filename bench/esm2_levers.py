"""ESM-2 levers on one GPU: the baselines and ours with each lever on and off, in one run.

One random-weight ESM-2 (default esm2_t36_3B), the protein set of bench/esm2_throughput.py
(shaped like translated 500-base chunks), one table:

  baselines   original (fair-esm fp32, 2048-token batches), fair16 (fair-esm fp16), hf-sdpa
              (transformers EsmModel sdpa bf16, padded ~128k-token batches): timed by
              esm2_throughput.main itself (same code, same FLOP and MFU definitions)
  ours        reference = bf16, 64k token budget, attention backend auto (varlen), eager; then one
              lever changed at a time:
                token budget 16k / 32k / 128k      precision fp16      backend padded / flex
                torch.compile on (default mode; at the largest budget; max-autotune-no-cudagraphs)
                (control: the reference again, for spread)

Every row: tokens/s, MFU (model FLOPs of real tokens / the bf16 8192^3 matmul rate measured by
the baseline run), packing efficiency = real tokens / (batches x budget) over the whole set, and
notes; compiled variants: compile time (first batch - steady batch), dynamo's compile seconds,
compiled frames and recompilations. One fair-esm model and one bf16 encoder serve every bf16
variant (budget, backend and compile are switched on it); compiled variants run last. A variant
that fails is recorded as failed; none starts after --deadline s; the JSON is rewritten after
every row. Compiled variants: the default mode, the default mode at the largest budget, and
max-autotune-no-cudagraphs.

Round 2 (``--rows``): today's default (compiled) re-measured, then the fused engine's levers
side by side (Triton residual+LayerNorm / rotary / GELU kernels around cuBLAS; GELU in a Triton
fc1 epilogue; the Triton attention kernel; fp8 matmuls), each with the tokens/s predicted for
an H200 before the run (``PREDICTED_H200``; how each was derived: bench/results/README.md).

    python bench/esm2_levers.py --out bench/results/esm2_levers_h100.json      # ~6 min, H100
    python bench/esm2_levers.py --rows all --baselines --seconds 6 --out ...   # round 2, ~3 min
    python bench/esm2_levers.py --model-size 8M --quick                        # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import esm2_throughput as tp  # noqa: E402
import mfu  # noqa: E402
from esm2_fidelity_gpu import chunk_proteins  # noqa: E402

from virnuc_core.attention import choose_backend  # noqa: E402
from virnuc_core.models import esm2 as esm2_mod  # noqa: E402
from virnuc_core.models.esm2 import REFERENCE_TOKENS_PER_BATCH, ESMEncoder  # noqa: E402
from virnuc_core.models.esm2_load import ESM2_ARCH, random_model  # noqa: E402
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402

BUDGETS = (16384, 32768, 65536, 131072)
QUICK_BUDGETS = (2048, 4096, 8192)
BASELINES = ("original", "fair16", "hf-sdpa")
COMPILE_MODES = "default and max-autotune-no-cudagraphs; reduce-overhead (CUDA graphs) not run: "
COMPILE_MODES += "the profile shows < 1% of a batch with the GPU idle, all a CUDA graph could save"
COLUMNS = ["method", "lever", "setting", "tokens/s", "MFU", "packing", "vs ref", "notes"]
ROUND2_COLUMNS = ["lever", "setting", "predicted", "tokens/s", "MFU", "vs default", "notes"]
# Round-2 rows: name -> (lever, setting, encoder options). "default" is today's job default.
ROUND2 = {
    "default": ("today's default", "bf16, compiled, varlen",
                {"compile": True, "backend": "varlen"}),
    "new-default": ("new job default", "the workflow's defaults now", "settings"),
    "fused": ("fused kernels", "bf16, Triton add+LN / rotary / GELU, varlen",
              {"fused": True, "backend": "varlen"}),
    "fused-triton": ("+ Triton attention", "bf16, fused, triton attention",
                     {"fused": True, "backend": "triton"}),
    "compiled-triton": ("attention", "bf16, compiled, triton attention",
                        {"compile": True, "backend": "triton"}),
    "fp8": ("precision fp8", "fp8 matmuls (fast accum), fused, varlen",
            {"precision": "fp8", "backend": "varlen"}),
    "fp8-triton": ("fp8 + Triton attention", "fp8, fused, triton attention",
                   {"precision": "fp8", "backend": "triton"}),
    "fp8-ffn": ("fp8 fc1/fc2 only", "fp8 fc1 and fc2, bf16 q/k/v and out, fused, triton",
                {"precision": "fp8", "fp8_layers": ("fc1", "fc2"), "backend": "triton"}),
    "fp8-fp32-accum": ("fp8 accumulation", "fp8 with fp32 accumulation, fused, varlen",
                       {"precision": "fp8", "fast_accum": False, "backend": "varlen"}),
    "fused-epilogue": ("+ GELU epilogue", "bf16, fused, fc1+GELU one Triton matmul, varlen",
                       {"fused": True, "gelu_epilogue": True, "backend": "varlen"}),
    "eager": ("engine", "bf16, eager, varlen", {"backend": "varlen"}),
    "fused-epilogue-triton": ("+ both", "bf16, fused, GELU epilogue, triton attention",
                              {"fused": True, "gelu_epilogue": True, "backend": "triton"}),
}  # fmt: skip
# tokens/s predicted for one H200 (H100 compute, 1.4x its bandwidth) before measuring; derived
# per 65,536-token batch in bench/results/README.md ("Round 2: predictions").
PREDICTED_H200 = {
    "default": 100_800, "eager": 90_500, "fused": 105_700, "fused-epilogue": 108_000,
    "fused-triton": 108_000, "fused-epilogue-triton": 110_500, "compiled-triton": 103_000,
    "fp8": 157_500, "fp8-triton": 163_000, "fp8-fp32-accum": 142_000,
    # after the smoke run (bench/results/README.md, "Round 2: smoke run"), from its kernel times
    "new-default": 104_500, "fp8-ffn": 142_000,
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    """Command line; --quick shrinks the set, the budgets and the seconds for a smoke run."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--n", type=int, default=20000, help="proteins in the set")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per variant")
    ap.add_argument("--budgets", type=int, nargs="*", help=f"token budgets (default {BUDGETS})")
    ap.add_argument("--ref-budget", type=int, help="the reference budget (default 65536)")
    ap.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    ap.add_argument("--rows", nargs="*", choices=[*ROUND2, "all"],
                    help="round 2: these rows instead of the round-1 levers")  # fmt: skip
    ap.add_argument("--hf-tokens", type=int, default=131072, help="hf-sdpa padded tokens/batch")
    ap.add_argument("--fair-subset", type=int, default=6000, help="proteins batched for a/b")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    ap.add_argument("--deadline", type=float, default=540.0, help="start no variant after (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small set, 0.5 s per variant")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.seconds, args.hf_tokens, args.fair_subset = 300, 0.5, 8192, 100
    args.budgets = args.budgets or list(QUICK_BUDGETS if args.quick else BUDGETS)
    args.ref_budget = args.ref_budget or (4096 if args.quick else 65536)
    if args.ref_budget not in args.budgets:
        args.budgets.append(args.ref_budget)
    if args.rows and "all" in args.rows:
        args.rows = list(ROUND2)
    return args


def run_baselines(args) -> dict | None:
    """The baselines, timed by ``esm2_throughput.main`` itself; its JSON payload read back."""
    if not args.baselines:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baselines.json"
        tp.main(
            ["--model-size", args.model_size, "--n", str(args.n), "--seconds", str(args.seconds),
             "--hf-tokens", str(args.hf_tokens), "--fair-subset", str(args.fair_subset),
             "--seed", str(args.seed), "--no-compile", "--out", str(out),
             "--methods", *args.baselines]
        )  # fmt: skip
        payload = json.loads(out.read_text())
    free_memory()
    return payload


def baseline_rows(payload: dict) -> list[dict]:
    """Rows of the table from esm2_throughput's results (its MFU: the same matmul rate)."""
    hf = payload["hf_tokens_per_batch"]
    budget = {"hf-sdpa": hf}
    setting = {
        "original": "fair-esm fp32, 2k-token batches",
        "fair16": "fair-esm fp16, 2k-token batches",
        "hf-sdpa": f"HF sdpa bf16, padded {hf // 1024}k batches",
    }
    rows = []
    for r in payload["results"]:
        b = budget.get(r["method"], REFERENCE_TOKENS_PER_BATCH)
        rows.append({**r, "lever": "baseline", "setting": setting.get(r["method"], r["method"]),
                     "packing_eff": r["timed_tokens"] / (r["timed_batches"] * b), "budget": b,
                     "notes": f"padding {r['padding_fraction']:.1%} of batch tokens"})  # fmt: skip
    return rows


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def watched_codes() -> list:
    """Code objects of the functions torch.compile may compile in ours."""
    from torch.nn.attention.flex_attention import flex_attention

    return [esm2_mod.pre_attention.__code__, esm2_mod.post_attention.__code__,
            flex_attention.__code__]  # fmt: skip


def compile_state() -> dict:
    """Dynamo's counters now (they only grow; a variant's numbers are differences)."""
    from torch._dynamo import utils as dyn

    times = getattr(dyn, "compilation_time_metrics", {}).get("_compile.compile_inner", [])
    state = {
        "frames_compiled": dyn.counters["frames"]["ok"],
        "graphs": dyn.counters["stats"]["unique_graphs"],
        "graph_breaks": sum(dyn.counters["graph_break"].values()),
        "dynamo_compile_s": float(sum(times)),
        "cache_entries": 0,
    }
    try:  # one cache entry per compiled version of a function: the first is not a recompile
        entries = torch._C._dynamo.eval_frame._debug_get_cache_entry_list
        state["cache_entries"] = sum(len(entries(c)) for c in watched_codes())
    except Exception as e:  # noqa: BLE001 - private API; counters above still hold
        state["cache_entries"] = f"unavailable ({type(e).__name__})"
    return state


def compile_delta(before: dict, after: dict) -> dict:
    """after - before for every numeric counter."""
    return {
        k: after[k] - before[k] if isinstance(after[k], int | float) else after[k] for k in after
    }


class Levers:
    """Ours with one lever changed at a time, on one model; rows appended to ``self.rows``."""

    def __init__(self, args, peak: float, rows: list[dict], save, start: float):
        self.args, self.peak, self.rows, self.save, self.start = args, peak, rows, save, start
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.name, arch = ESM2_ARCH[args.model_size]
        t0 = time.perf_counter()
        self.fair, self.alphabet = random_model(args.seed, self.device, **arch)
        print(
            f"ours: {self.name} random weights on {self.device} in {time.perf_counter() - t0:.1f} s"
        )
        self.dim, self.layers = arch["embed_dim"], arch["num_layers"]
        self.p_nonemb = sum(
            p.numel()
            for n, p in self.fair.named_parameters()
            if n.startswith(("layers.", "emb_layer_norm_after"))
        )
        self.seqs = chunk_proteins(args.n, args.seed)
        self.tokens = None
        self._work: dict[int, tuple[list, float]] = {}

    def encoder(self, precision: str, backend: str = "auto", compile: bool = False,
                fast_accum: bool = True, **options) -> ESMEncoder:  # fmt: skip
        """An encoder on the shared fair-esm model, built as a job builds it (the same class
        and switches); it keeps no reference to the fair-esm model."""

        def no_reference():
            raise RuntimeError("the fp32 reference path is not used by this bench")

        enc = ESMEncoder(self.fair, self.alphabet, spec=self.name, device=self.device,
                         precision=precision, backend=backend, compile=compile,
                         reference_factory=no_reference, **options)  # fmt: skip
        if enc.ops is not None and enc.ops.scaled_mm is not None:
            enc.ops.scaled_mm.fast_accum = fast_accum
        self.tokens = self.tokens or enc.tokenize(self.seqs)
        return enc

    def work(self, budget: int) -> tuple[list, float]:
        """The set packed at ``budget`` (random order, pinned) and its packing efficiency."""
        if budget not in self._work:
            self._work.clear()  # one budget's pinned batches at a time
            groups = pack_ffd([len(t) for t in self.tokens], budget)
            work = []
            for idx in groups:
                b = make_batch([self.tokens[i] for i in idx])
                work.append(tp.Work(b.pin_memory() if self.cuda else b,
                                    [len(self.tokens[i]) for i in idx]))  # fmt: skip
            eff = sum(w.tokens for w in work) / (len(work) * budget)
            self._work[budget] = (tp.shuffled(work, self.args.seed), eff)
        return self._work[budget]

    def measure(self, enc: ESMEncoder, budget: int) -> dict:
        """Time the first batch alone, then warm-up and >= --seconds of batches."""
        work, eff = self.work(budget)
        device = self.device

        def step(w):
            return enc.embed_packed(w.payload.to(device, non_blocking=True)).cpu()

        before = compile_state()
        tp.sync()
        t0 = time.perf_counter()
        step(work[0])
        tp.sync()
        first = time.perf_counter() - t0
        after_first = compile_state()["frames_compiled"]
        sec, done = tp.time_batches(step, work[1:] or work, self.args.seconds, warmup=2)
        delta = compile_delta(before, compile_state())
        # a recompile: a frame compiled after the first batch (a new shape the graph missed)
        delta["recompiles"] = delta["frames_compiled"] - (after_first - before["frames_compiled"])
        toks = sum(w.tokens for w in done)
        tflops = tp.model_flops(done, self.p_nonemb, self.dim, self.layers) / sec / 1e12
        steady = sec / len(done)
        return {"tokens_per_s": toks / sec, "proteins_per_s": sum(w.n for w in done) / sec,
                "model_tflops": tflops, "mfu": tflops / self.peak, "packing_eff": eff,
                "packing_eff_timed": toks / (len(done) * budget), "batches_in_set": len(work),
                "timed_s": sec, "timed_batches": len(done), "timed_tokens": toks,
                "first_batch_s": first, "steady_batch_s": steady, "compile_s": first - steady,
                **delta}  # fmt: skip

    def variant(self, lever, setting, make, budget: int, note="", reserve=0.0) -> None:
        """Run one variant (``make()`` -> encoder), or record why it was skipped or failed.

        Skipped when less than ``reserve`` seconds (the variant's expected compile time) are
        left before --deadline.
        """
        row = {"method": "ours", "lever": lever, "setting": setting, "budget": budget}
        if time.perf_counter() - self.start > self.args.deadline - reserve:
            row["notes"] = f"skipped: too close to --deadline {self.args.deadline:.0f} s"
        else:
            try:
                enc = make()
                row.update(self.measure(enc, budget), precision=enc.precision,
                           backend=enc.backend, compiled=enc.compiled,
                           fused=enc.ops is not None)  # fmt: skip
                row["notes"] = self.describe(row, note)
                del enc
            except Exception as e:  # noqa: BLE001 - one failed lever must not lose the others
                row["notes"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            free_memory()
        self.rows.append(row)
        print(f"  {lever} {setting}: {fmt_row(row)['tokens/s']} tokens/s, {row['notes']}")
        self.save()

    @staticmethod
    def describe(row: dict, note: str) -> str:
        engine = " compiled" if row["compiled"] else (" fused" if row.get("fused") else "")
        parts = [f"{row['precision']} {row['backend']}{engine}"]
        parts.append(f"{row['batches_in_set']} batches")
        if row["frames_compiled"] or row["compiled"] or row["backend"] == "flex":
            c, d = row["compile_s"], row["dynamo_compile_s"]
            n, r = row["frames_compiled"], row["recompiles"]
            parts.append(f"compile {c:.1f} s (dynamo {d:.1f} s), {n} frames, {r} recompiles")
        else:
            parts.append(f"first batch {row['compile_s']:+.2f} s")
        return "; ".join(parts + ([note] if note else []))

    def skip(self, lever: str, setting: str, why: str) -> None:
        self.rows.append({"method": "ours", "lever": lever, "setting": setting, "notes": why})
        print(f"  {lever} {setting}: {why}")

    def run(self) -> None:
        """Every lever of ours, one at a time from the reference; compiled variants last."""
        a, cuda = self.args, self.cuda
        ref = a.ref_budget
        enc = self.encoder("bf16")

        def with_(backend="auto", compiled=False, mode="default"):
            enc.backend = choose_backend(backend, self.device.type, False)
            enc.compiled, enc.compile_mode = compiled, mode
            return enc

        self.variant("reference", f"{ref // 1024}k, bf16, auto, eager", with_, ref)
        for b in sorted(set(a.budgets) - {ref}):
            self.variant("token budget", f"{b // 1024}k", with_, b)
        self.variant("backend", "padded", lambda: with_("padded"), ref)
        if cuda:
            self.variant("precision", "fp16", lambda: self.encoder("fp16"), ref)
        else:
            self.skip("precision", "fp16", "skipped: CPU runs fp32 only (needs CUDA)")
        self.variant("control", "reference again", with_, ref, "run-to-run spread")
        if cuda:
            note = "flex_attention compiled, block mask per batch"
            self.variant("backend", "flex", lambda: with_("flex"), ref, note, reserve=90)
        else:
            self.skip("backend", "flex", "skipped: on CPU flex maps to the loop backend")
        if a.no_compile or not cuda:
            why = "--no-compile" if cuda else "ESMEncoder compiles on CUDA only"
            self.skip("torch.compile", "on", f"skipped: {why}")
        else:
            note = "pre/post-attention compiled, token dimension dynamic"
            on = lambda: with_(compiled=True)  # noqa: E731
            self.variant("torch.compile", "on (default mode)", on, ref, note, reserve=60)
            self.variant("torch.compile", "on, 128k budget", on, max(a.budgets), note, reserve=30)
            mode = "max-autotune-no-cudagraphs"
            tuned = lambda: with_(compiled=True, mode=mode)  # noqa: E731
            self.variant("compile mode", mode, tuned, ref, note, reserve=150)


def run_round2(levers: Levers) -> None:
    """The round-2 rows (``--rows``), each on a fresh encoder, at the reference budget."""
    cuda, ref = levers.cuda, levers.args.ref_budget
    for name in levers.args.rows:
        lever, setting, opts = ROUND2[name]
        opts = job_defaults() if opts == "settings" else dict(opts)
        precision = opts.pop("precision", "bf16")
        if not cuda and (opts.get("compile") or precision == "fp8"):
            levers.skip(lever, setting, "skipped: needs CUDA")
            continue
        reserve = 20 if opts.get("gelu_epilogue") or opts.get("compile") else 10  # s to start
        levers.variant(lever, setting, lambda p=precision, o=opts: levers.encoder(p, **o), ref,
                       reserve=reserve)  # fmt: skip
        row = levers.rows[-1]
        row["row"] = name
        row["predicted_h200"] = PREDICTED_H200.get(name) if levers.args.model_size == "3B" else None
        if row.get("backend") is not None:
            row["kernels"] = ROUND2[name][1]


def job_defaults() -> dict:
    """Encoder options of an ESM-2 embed job with the workflow's default settings."""
    from virnuc_core.settings import WorkflowSettings

    base = {"chunk_length": 500, "shards": 1, "models": {"dnabert": "x", "esm": "x"}}
    s = WorkflowSettings.from_config(base).embed("esm")
    return {"precision": s.precision, "backend": s.attention_backend, "compile": s.compile,
            "compile_mode": s.compile_mode, "fused": s.fused_kernels}  # fmt: skip


def round2_table(rows: list[dict]) -> list[dict]:
    """Printed cells of the round-2 rows; 'vs default' against today's default row."""
    base = next((r for r in rows if r.get("row") == "default" and r.get("tokens_per_s")), None)
    out = []
    for r in rows:
        if "row" not in r:
            continue
        cells = fmt_row(r)
        pred = r.get("predicted_h200")
        cells["predicted"] = "-" if pred is None else f"{pred:,.0f}"
        tps = r.get("tokens_per_s")
        cells["vs default"] = f"{tps / base['tokens_per_s']:.3f}x" if base and tps else "-"
        if base and tps:
            r["vs_default"] = tps / base["tokens_per_s"]
        out.append(cells)
    return out


def fmt_row(r: dict) -> dict:
    """One row's printed cells."""
    tps = r.get("tokens_per_s")
    return {
        "method": r["method"],
        "lever": r["lever"],
        "setting": r["setting"],
        "tokens/s": "-" if tps is None else f"{tps:,.0f}",
        "MFU": "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
        "packing": "-" if r.get("packing_eff") is None else f"{100 * r['packing_eff']:.1f}%",
        "vs ref": "-" if r.get("vs_ref") is None else f"{r['vs_ref']:.2f}x",
        "notes": r.get("notes", ""),
    }


def make_payload(args, peak: float, rows: list[dict], baselines: dict | None) -> dict:
    """The JSON written by --out (rows filled in as the run goes)."""
    name, arch = ESM2_ARCH[args.model_size]
    return {
        "bench": "esm2_levers",
        "machine": mfu.machine_info(),
        "model": name,
        "architecture": arch,
        "weights": f"random, seed {args.seed}",
        "bf16_matmul_tflops": peak,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "definitions": {
            "flops": "as esm2_throughput: 2 * nonembedding_parameters * real_tokens + sum over "
            "proteins and layers of 4 * L^2 * dim; padding never counted",
            "mfu": "model FLOP/s / bf16 8192^3 matmul rate measured in this run",
            "packing_eff": "real tokens / (batches x budget); ours over the whole set, "
            "baselines over the timed batches (budget 2048 tokens, or --hf-tokens)",
            "compile_s": "first-batch time - steady time per batch (eager rows: first-batch "
            "overhead); dynamo_compile_s: dynamo's _compile.compile_inner seconds",
            "recompiles": "dynamo frames compiled after the variant's first batch (new token "
            "counts the first graph did not cover); frames_compiled: all frames compiled in "
            "the variant; cache_entries: compiled versions of pre_attention, post_attention "
            "and flex_attention added (a new compile mode adds one per function)",
            "vs_ref": "tokens/s / the reference row (bf16, reference budget, auto, eager)",
        },
        "compile_modes": COMPILE_MODES,
        "rows": rows,
        "baseline_run": baselines,
    }


def fp8_peak() -> float | None:
    """The fp8 row-wise-scaled 8192^3 matmul rate here (None without a Hopper/Ada GPU)."""
    from virnuc_core.fp8 import measure_fp8_tflops

    try:
        return measure_fp8_tflops()
    except Exception as e:  # noqa: BLE001 - the bf16 rows still count
        print(f"fp8 matmul rate: failed ({type(e).__name__}: {e})")
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"ESM-2 levers: {ESM2_ARCH[args.model_size][0]}, {args.n} proteins, {args.seconds} s "
          f"per variant, budgets {args.budgets}, reference {args.ref_budget}")  # fmt: skip
    try:
        baselines = run_baselines(args)
    except Exception as e:  # noqa: BLE001 - ours is still worth measuring
        print(f"baselines failed: {type(e).__name__}: {e}")
        baselines = None
        free_memory()
    if baselines:
        peak = baselines["bf16_matmul_tflops"]
    else:
        peak = mfu.measure_matmul_tflops(
            torch.bfloat16, n=8192 if torch.cuda.is_available() else 512
        )
    rows = baseline_rows(baselines) if baselines else []
    payload = make_payload(args, peak, rows, baselines)

    def save():
        payload["elapsed_s"] = time.perf_counter() - t_start
        mfu.write_json(args.out, payload)

    payload["fp8_matmul_tflops"] = fp8_peak()
    payload["predicted_h200"] = PREDICTED_H200
    save()
    levers = Levers(args, peak, rows, save, t_start)
    if args.rows:
        run_round2(levers)
        print()
        mfu.print_table(round2_table(rows), ROUND2_COLUMNS)
        save()
        print(f"total {payload['elapsed_s']:.0f} s")
        return 0
    levers.run()
    ref = next((r for r in rows if r["lever"] == "reference" and r.get("tokens_per_s")), None)
    for r in rows:
        if ref and r.get("tokens_per_s"):
            r["vs_ref"] = r["tokens_per_s"] / ref["tokens_per_s"]
    print()
    mfu.print_table([fmt_row(r) for r in rows], COLUMNS)
    save()
    print(f"total {payload['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
