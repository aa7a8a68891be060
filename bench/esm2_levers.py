"""ESM-2 levers on one GPU: the baselines, and the job's engine with one lever changed a row.

One random-weight ESM-2 (default esm2_t36_3B, fair-esm's init) and one set of proteins shaped
like translated 500-base chunks, one table:

  baselines  original: fair-esm ``ESM2.forward`` in fp32 on 2048-token batches from fair-esm's
             length-sorted batching (BatchConverter, truncation 1024), representations to the
             host, then a per-protein mean, as VirNucPro's extraction did; fair16: the same
             after ``model.half()``; hf-sdpa: transformers' ``EsmModel`` (sdpa, bf16) on padded
             ~128k-token batches in random order, masked mean on the GPU.
  ours       what an embed job runs (the job's encoder, packer and device loop) with the
             schema's defaults (row ``job``: the ESM-2 job's bare rate) or with the settings
             one lever changes (``ROWS``): token budget, precision, attention backend, and
             which matmuls add into the residual stream (an engine option, not a setting).
             The levers measured and removed in issue 36 (torch.compile and its modes, fp8,
             flex, the Triton GELU matmul, rotary in the attention kernel) are in
             bench/results/README.md; this file as it was, with their rows, in commit eafe23c.

Every row: tokens/s, MFU (model FLOPs of the real tokens, 2 x non-embedding parameters a token
+ 4 x L^2 x dim a protein and layer, over the bf16 8192^3 matmul rate measured here), packing
efficiency (real tokens / (batches x budget)); ours also the first batch's extra time.
Baselines: host token tensors -> device -> forward -> pooled rows on
the host, tokenizing not timed. Rows run in order, ours first (fair16 halves the shared
model); each row runs warm-up batches, then batches for >= --seconds; a row that fails is
recorded as failed, none starts after --deadline s, and the JSON is rewritten after every row.

    python -m bench.esm2_levers --rows job --baselines none --out ...  # the job's bare rate
    python -m bench.esm2_levers --out bench/results/esm2_levers.json   # every row, baselines
    python -m bench.esm2_levers --model-size 8M --quick                # CPU smoke
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np
import torch

from bench import _harness as h
from virnuc_core.engine.models.esm2 import REFERENCE_TOKENS_PER_BATCH, Tokenizer
from virnuc_core.engine.models.esm2_load import ESM2_ARCH

# name -> (lever, setting, config changes, LinearOps options (not settings), budget x)
ROWS = {
    "job": ("job default", "the workflow's settings", {}, {}, 1),
    "budget/4": ("token budget", "1/4 of --token-budget", {}, {}, 0.25),
    "budget/2": ("token budget", "1/2 of --token-budget", {}, {}, 0.5),
    "budget*2": ("token budget", "2 x --token-budget", {}, {}, 2),
    "varlen": ("backend", "PyTorch's varlen flash attention", {"attention_backend": "varlen"},
               {}, 1),
    "padded": ("backend", "padded", {"attention_backend": "padded"}, {}, 1),
    "fp16": ("precision", "fp16", {"precision": "fp16"}, {}, 1),
    "residual-out": ("only out adds into the stream", "job, fc2 adding its output to the LN",
                     {}, {"residual_in_matmul": ("out",)}, 1),
    "residual-ln": ("no matmul adds into the stream", "job, residual + LayerNorm kernels only",
                    {}, {"residual_in_matmul": ()}, 1),
    "job-again": ("control", "the job's settings again: run-to-run spread", {}, {}, 1),
}  # fmt: skip
GROUPS = {"all": list(ROWS)}
BASELINES = ("original", "fair16", "hf-sdpa")
COLUMNS = ["method", "row", "setting", "tokens/s", "MFU", "packing", "vs job", "notes"]


def parse_args(argv=None) -> argparse.Namespace:
    """Command line; --quick shrinks the set and the seconds for a smoke run."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--n", type=int, default=20000, help="proteins in the set")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per row")
    ap.add_argument("--token-budget", type=int, default=65536, help="ours: the rows' budget")
    ap.add_argument("--rows", nargs="*", default=["all"], choices=[*ROWS, *GROUPS])
    ap.add_argument(
        "--baselines",
        nargs="*",
        default=list(BASELINES),
        choices=[*BASELINES, "none"],
        help="which baselines (default, or the flag alone: all; none: skip them)",
    )
    ap.add_argument("--hf-tokens", type=int, default=131072, help="hf-sdpa padded tokens/batch")
    ap.add_argument("--fair-subset", type=int, default=6000, help="proteins batched for fair-esm")
    h.add_settings_arg(ap)
    ap.add_argument("--deadline", type=float, default=540.0, help="start no row after (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small set, 0.5 s per row")
    ap.add_argument("--out", help="write the results here as JSON")
    a = ap.parse_args(argv)
    # a bare --baselines (an empty list) means all of them, as when it is left out
    a.baselines = [] if "none" in a.baselines else a.baselines or list(BASELINES)
    if a.quick:
        a.n, a.seconds, a.hf_tokens, a.fair_subset, a.token_budget = 300, 0.5, 8192, 100, 4096
    a.rows = list(dict.fromkeys(r for x in a.rows for r in GROUPS.get(x, [x])))
    return a


class Work:
    """One baseline batch: its payload, the lengths of its proteins, its padded size."""

    def __init__(self, payload, lengths, padded=None):
        self.payload, self.lengths = payload, list(lengths)
        self.padded = sum(self.lengths) if padded is None else int(padded)


def time_steps(step, work: list[Work], seconds: float, warmup: int = 2):
    """Run ``step`` over ``work`` (cycled) until >= ``seconds`` have passed; every step ends with
    rows on the host (a sync). (seconds, the batches timed)."""
    for w in work[:warmup]:
        step(w)
    h.sync()
    done, t0 = [], time.perf_counter()
    while not done or time.perf_counter() - t0 < seconds:
        w = work[(warmup + len(done)) % len(work)]
        step(w)
        done.append(w)
    h.sync()
    return time.perf_counter() - t0, done


class Levers:
    """The set, the shared fair-esm model and the rows so far (JSON rewritten after each)."""

    def __init__(self, a: argparse.Namespace):
        self.a, self.start, self.rows = a, time.perf_counter(), []
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        self.name, self.arch = ESM2_ARCH[a.model_size]
        self.peak = h.measure_matmul_tflops(torch.bfloat16, n=8192 if h.CUDA else 512)
        print(f"bf16 matmul rate: {self.peak:.1f} TFLOP/s", flush=True)
        t0 = time.perf_counter()
        self.fair, self.alphabet = h.random_esm(a.model_size, a.seed)
        print(f"{self.name}: random weights on {h.DEVICE} in {time.perf_counter() - t0:.1f} s")
        self.p_nonemb = sum(p.numel() for n, p in self.fair.named_parameters()
                            if n.startswith(("layers.", "emb_layer_norm_after")))  # fmt: skip
        self.seqs = h.chunk_proteins(a.n, a.seed)
        self.tokens = Tokenizer(self.alphabet)(self.seqs)
        self.lengths = np.array([len(t) for t in self.tokens])
        self.batches: dict[int, list] = {}

    def result(self, method, row, setting, seconds, lengths, batches, budget, **extra) -> dict:
        """One table row from what was timed (real tokens only) and print its summary."""
        lengths = np.asarray(lengths)
        flops = h.model_flops(lengths, self.p_nonemb, self.arch["num_layers"],
                              self.arch["embed_dim"])  # fmt: skip
        r = {"method": method, "row": row, "setting": setting, "budget": budget,
             "tokens_per_s": lengths.sum() / seconds, "proteins_per_s": lengths.size / seconds,
             "model_tflops": flops / seconds / 1e12, "mfu": flops / seconds / 1e12 / self.peak,
             "timed_s": seconds, "timed_batches": batches, "timed_tokens": int(lengths.sum()),
             "packing_eff_timed": lengths.sum() / (batches * budget), **extra}  # fmt: skip
        self.rows.append(r)
        self.save()
        print(f"  {method} {row}: {r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu']:.3f}; "
              f"{r.get('notes', '')}", flush=True)  # fmt: skip
        return r

    def skip(self, method: str, row: str, setting: str, why: str) -> None:
        self.rows.append({"method": method, "row": row, "setting": setting, "notes": why})
        print(f"  {method} {row}: {why}", flush=True)
        self.save()

    def late(self, reserve: float) -> bool:
        return time.perf_counter() - self.start > self.a.deadline - reserve

    def ours(self, name: str) -> None:
        """One row of ours: the job's encoder with the row's settings, its packer and loop."""
        lever, setting, changes, options, factor = ROWS[name]
        budget = int(self.a.token_budget * factor)
        cuda_only = changes.get("precision") == "fp16"
        reserve = 60 if cuda_only else 20
        if not h.CUDA and cuda_only:
            return self.skip("ours", name, setting, "skipped: needs CUDA")
        if self.late(reserve):
            return self.skip("ours", name, setting, f"skipped: --deadline {self.a.deadline:.0f}")
        try:
            self.measure(name, setting, {**dict(self.a.set), **changes,
                                         "token_budget.esm": budget}, options, budget)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - one failed lever must not lose the others
            self.skip("ours", name, setting, f"failed: {type(e).__name__}: {str(e)[:200]}")
        free_memory()

    def measure(self, name: str, setting: str, changes: dict, options: dict, budget: int) -> None:
        settings = h.job_settings("esm", self.name, changes)
        enc = h.esm_encoder(self.fair, settings, **options)
        if budget not in self.batches:
            self.batches = {budget: h.job_batches(self.tokens, budget)}  # one budget at a time
        batches = self.batches[budget]
        before, dyn_before = h.frames_compiled(), dynamo_seconds()
        first = h.run_batches(enc.embed_packed, batches[:1]).seconds
        first_frames = h.frames_compiled() - before
        h.run_batches(enc.embed_packed, batches[1:3])  # warm-up
        timed = h.run_batches(enc.embed_packed, batches, seconds=self.a.seconds)
        d = enc.describe()
        frames = h.frames_compiled() - before
        steady = timed.seconds / timed.batches
        engine = d["kernels"]
        notes = f"{d['precision']} {d['attention_backend']}; {len(batches)} batches; "
        notes += f"compile {first - steady:.1f} s, {frames} frames" if frames else (
            f"first batch {first - steady:+.2f} s")  # fmt: skip
        eff = self.lengths.sum() / (len(batches) * budget)
        self.result("ours", name, setting, timed.seconds, self.lengths[timed.records],
                    timed.batches, budget, packing_eff=eff,
                    precision=d["precision"], backend=d["attention_backend"], engine=engine,
                    first_batch_s=first, steady_batch_s=steady, compile_s=first - steady,
                    frames_compiled=frames, recompiles=frames - first_frames,
                    dynamo_compile_s=dynamo_seconds() - dyn_before, notes=notes,
                    settings=settings.as_dict(), options=options)  # fmt: skip

    def save(self) -> None:
        name, arch = ESM2_ARCH[self.a.model_size]
        h.write_json(self.a.out, {
            "bench": "esm2_levers", "machine": h.machine_info(), "model": name,
            "architecture": arch, "weights": f"random, seed {self.a.seed}",
            "bf16_matmul_tflops": self.peak,
            "settings": {k: v for k, v in vars(self.a).items() if k != "out"},
            "definitions": {
                "flops": "2 * nonembedding_parameters * real_tokens + sum over proteins and "
                "layers of 4 * L^2 * dim; padding never counted",
                "mfu": "model FLOP/s / bf16 8192^3 matmul rate measured in this run",
                "packing_eff": "real tokens / (batches x budget) over the whole set (ours); "
                "packing_eff_timed: over the timed batches (baselines: budget 2048 tokens, "
                "or --hf-tokens)",
                "compile_s": "first-batch time - steady time per batch",
                "recompiles": "frames compiled after the row's first batch",
                "vs_job": "tokens/s / the job row's"},
            "rows": self.rows,
            "elapsed_s": time.perf_counter() - self.start,
        })  # fmt: skip


def dynamo_seconds() -> float:
    from torch._dynamo import utils as dyn

    return float(sum(getattr(dyn, "compilation_time_metrics", {}).get(
        "_compile.compile_inner", [])))  # fmt: skip


def free_memory() -> None:
    gc.collect()
    if h.CUDA:
        torch.cuda.empty_cache()


# -- the baselines --------------------------------------------------------------------------


def fair_batches(alphabet, seqs: list[str], truncation: int = 1024) -> list[Work]:
    """fair-esm's length-sorted 2048-token batches, as its BatchConverter makes them."""
    import esm

    convert = alphabet.get_batch_converter(truncation_seq_length=truncation)
    ds = esm.data.FastaBatchedDataset([str(i) for i in range(len(seqs))], seqs)
    out = []
    for idx in ds.get_batch_indices(REFERENCE_TOKENS_PER_BATCH, extra_toks_per_seq=1):
        _, strs, toks = convert([(str(i), seqs[i]) for i in idx])
        lengths = (toks != alphabet.padding_idx).sum(1).tolist()
        out.append(Work((toks, [min(truncation, len(s)) for s in strs]), lengths, toks.numel()))
    return shuffled(out, 0)


def shuffled(work: list, seed: int) -> list:
    """Batches in a random order, so that a timed prefix is a fair sample of the set."""
    return [work[i] for i in np.random.default_rng(seed).permutation(len(work))]


def run_fair(lv: Levers, names: list[str]) -> None:
    """original (fp32) and fair16 (``model.half()``, CUDA only) on the first --fair-subset."""
    work = fair_batches(lv.alphabet, lv.seqs[: lv.a.fair_subset])  # fair-esm's tokenizer is slow
    last = lv.arch["num_layers"]

    def step(w, half=False):
        toks, keep = w.payload
        with torch.no_grad():
            out = lv.fair(toks.to(h.DEVICE, non_blocking=True), repr_layers=[last])
        rep = out["representations"][last]
        rep = (rep.float() if half else rep).to("cpu")
        return [rep[i, 1 : k + 1].mean(0).clone() for i, k in enumerate(keep)]

    for name, half in (("original", False), ("fair16", True)):
        if name not in names or lv.late(20):
            continue
        if half and not h.CUDA:
            lv.skip(name, "baseline", "fair-esm fp16", "skipped: needs CUDA")
            continue
        if half:
            lv.fair.half()
            for layer in lv.fair.layers:  # fair-esm caches rotary cos/sin per length: drop them
                layer.self_attn.rot_emb._seq_len_cached = None
        sec, done = time_steps(lambda w, half=half: step(w, half), work, lv.a.seconds)
        lengths = [n for w in done for n in w.lengths]
        pad = 1 - sum(lengths) / sum(w.padded for w in done)
        setting = f"fair-esm {'fp16' if half else 'fp32'}, 2k-token batches"
        lv.result(
            name,
            "baseline",
            setting,
            sec,
            lengths,
            len(done),
            REFERENCE_TOKENS_PER_BATCH,
            notes=f"padding {pad:.1%} of batch tokens; first {lv.a.fair_subset} proteins",
        )


def run_hf(lv: Levers) -> None:
    """transformers' EsmModel (sdpa, bf16) on padded batches of ~--hf-tokens, random order."""
    from transformers import EsmConfig, EsmModel

    d, pad = lv.arch["embed_dim"], lv.alphabet.padding_idx
    cfg = EsmConfig(vocab_size=33, hidden_size=d, num_hidden_layers=lv.arch["num_layers"],
                    num_attention_heads=lv.arch["attention_heads"], intermediate_size=4 * d,
                    position_embedding_type="rotary", token_dropout=True, mask_token_id=32,
                    pad_token_id=1, max_position_embeddings=1026, emb_layer_norm_before=False,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    layer_norm_eps=1e-5, attn_implementation="sdpa")  # fmt: skip
    with torch.device(h.DEVICE):
        model = EsmModel(cfg, add_pooling_layer=False)
    model = model.to(torch.bfloat16 if h.CUDA else torch.float32).eval()
    groups, cur, width = [], [], 0
    for i in np.random.default_rng(lv.a.seed).permutation(len(lv.tokens)):
        w = max(width, len(lv.tokens[i]))
        if cur and w * (len(cur) + 1) > lv.a.hf_tokens:
            groups.append(cur)
            cur, w = [], len(lv.tokens[i])
        cur.append(i)
        width = w
    work = []
    for g in [*groups, cur]:
        ids = torch.full((len(g), max(len(lv.tokens[i]) for i in g)), pad, dtype=torch.int64)
        for r, i in enumerate(g):
            ids[r, : len(lv.tokens[i])] = torch.from_numpy(lv.tokens[i])
        work.append(Work(ids.pin_memory() if h.CUDA else ids, lv.lengths[g], ids.numel()))

    def step(w):
        ids = w.payload.to(h.DEVICE, non_blocking=True)
        mask = ids.ne(pad)
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        pos = torch.arange(mask.shape[1], device=mask.device)
        weight = (mask & (pos >= 1) & (pos < mask.sum(1, keepdim=True) - 1)).float()
        return ((hidden.float() * weight[..., None]).sum(1) / weight.sum(1, keepdim=True)).cpu()

    sec, done = time_steps(step, work, lv.a.seconds)
    lengths = [n for w in done for n in w.lengths]
    pad_share = 1 - sum(lengths) / sum(w.padded for w in done)
    lv.result(
        "hf-sdpa",
        "baseline",
        f"HF sdpa bf16, padded {lv.a.hf_tokens // 1024}k batches",
        sec,
        lengths,
        len(done),
        lv.a.hf_tokens,
        notes=f"padding {pad_share:.1%}",
    )


def table(rows: list[dict]) -> list[dict]:
    """Printed cells; 'vs job' against the job row (``vs_job`` added to the rows)."""
    base = next((r for r in rows if r["row"] == "job" and r.get("tokens_per_s")), None)
    out = []
    for r in rows:
        tps = r.get("tokens_per_s")
        if base and tps:
            r["vs_job"] = tps / base["tokens_per_s"]
        out.append({"method": r["method"], "row": r["row"], "setting": r["setting"],
                    "tokens/s": "-" if tps is None else f"{tps:,.0f}",
                    "MFU": "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
                    "packing": f"{100 * r['packing_eff']:.1f}%" if "packing_eff" in r else "-",
                    "vs job": f"{r['vs_job']:.3f}x" if "vs_job" in r else "-",
                    "notes": r.get("notes", "")})  # fmt: skip
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    print(f"ESM-2 levers: {ESM2_ARCH[a.model_size][0]}, {a.n} proteins, {a.seconds} s a row, "
          f"rows {a.rows}, baselines {a.baselines}", flush=True)  # fmt: skip
    lv = Levers(a)
    for name in a.rows:
        lv.ours(name)
    run_fair(lv, a.baselines)
    lv.fair = None  # before the HF model is built
    free_memory()
    if "hf-sdpa" in a.baselines and not lv.late(30):
        run_hf(lv)
    print()
    h.print_table(table(lv.rows), COLUMNS)
    lv.save()
    print(f"total {time.perf_counter() - lv.start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
