"""ESM-2 inference throughput on one GPU: the original style, common alternatives, and ours.

Methods, all on the same protein set (shaped like translated 500-base chunks) and random weights
of one ESM-2 architecture (default esm2_t36_3B):

  a. original  fair-esm ESM2.forward, fp32, 2048-token batches from fair-esm's length-sorted
               batching, BatchConverter (truncation 1024); representations to the CPU, then a
               per-protein mean (as VirNucPro's extraction did)
  b. fair16    the same with model.half(); representations cast to fp32 on the GPU first
  c. hf-sdpa   transformers EsmModel, attn_implementation="sdpa", bf16, padded batches of
               ~128k tokens (padding included) in random order; masked mean on the GPU
  d. packed    this project: packed batches (token budget), bf16, varlen attention, segment mean
  e. packed+compile  (with --compile) d with the element-wise work compiled

Timed per method: host-side token tensors -> device -> forward -> pooled (n, dim) on the host
(tokenization is not timed for any). Warm-up batches first, then batches for >= --seconds,
synchronised at the end (CUDA events and wall clock). Model FLOPs count real tokens only:

  FLOPs = 2 * P_nonembedding * tokens + sum over proteins and layers of 4 * L^2 * dim

(L = tokens of the protein incl. BOS/EOS; 4 * L * dim per token per layer for QK^T and AV).
MFU = model FLOP/s / the bf16 dense matmul rate measured here (8192^3), for every method.

    python bench/esm2_throughput.py --out bench/results/esm2_throughput.json
    python bench/esm2_throughput.py --model-size 8M --quick     # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mfu  # noqa: E402
from esm2_fidelity_gpu import chunk_proteins  # noqa: E402

from virnuc_core.models.esm2 import REFERENCE_TOKENS_PER_BATCH, ESMEncoder, Tokenizer  # noqa: E402
from virnuc_core.models.esm2_load import ESM2_ARCH, random_model  # noqa: E402
from virnuc_core.packing import make_batch, pack_ffd  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_batches(step, batches, seconds, warmup=2):
    """Run ``step`` over ``batches`` (cycled) until >= ``seconds`` have passed.

    Every step ends by copying its pooled embeddings to the host, which synchronises, so the
    wall clock between the first and the last step is the GPU time too. Returns (seconds, the
    batches timed).
    """
    for b in batches[:warmup]:
        step(b)
    sync()
    done = []
    t0 = time.perf_counter()
    while not done or time.perf_counter() - t0 < seconds:
        b = batches[(warmup + len(done)) % len(batches)]
        step(b)
        done.append(b)
    sync()
    return time.perf_counter() - t0, done


class Work:
    """One batch: its payload, real tokens, sum of squared lengths, proteins, padded size."""

    def __init__(self, payload, lengths, padded=None):
        self.payload = payload
        self.tokens = int(sum(lengths))
        self.sq = int(sum(n * n for n in lengths))
        self.n = len(lengths)
        self.padded = self.tokens if padded is None else int(padded)


def shuffled(work, seed):
    """Batches in a random order, so that a timed prefix is a fair sample of the set."""
    return [work[i] for i in np.random.default_rng(seed).permutation(len(work))]


def fair_batches(alphabet, seqs, truncation=1024):
    import esm

    convert = alphabet.get_batch_converter(truncation_seq_length=truncation)
    ds = esm.data.FastaBatchedDataset([str(i) for i in range(len(seqs))], seqs)
    out = []
    for idx in ds.get_batch_indices(REFERENCE_TOKENS_PER_BATCH, extra_toks_per_seq=1):
        _, strs, toks = convert([(str(i), seqs[i]) for i in idx])
        lengths = (toks != alphabet.padding_idx).sum(1).tolist()
        keep = [min(truncation, len(s)) for s in strs]
        out.append(Work((toks, keep), lengths, toks.numel()))
    return out


def hf_batches(tokens, pad_idx, budget, seed):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tokens))
    groups, cur, width = [], [], 0
    for i in order:
        w = max(width, len(tokens[i]))
        if cur and w * (len(cur) + 1) > budget:
            groups.append(cur)
            cur, w = [], len(tokens[i])
        cur.append(i)
        width = w
    groups.append(cur)
    out = []
    for g in groups:
        lengths = [len(tokens[i]) for i in g]
        ids = torch.full((len(g), max(lengths)), pad_idx, dtype=torch.int64)
        for r, i in enumerate(g):
            ids[r, : lengths[r]] = torch.from_numpy(tokens[i])
        payload = (ids.pin_memory() if torch.cuda.is_available() else ids, lengths)
        out.append(Work(payload, lengths, ids.numel()))
    return out


def build_hf(arch, device):
    from transformers import EsmConfig, EsmModel

    d = arch["embed_dim"]
    cfg = EsmConfig(
        vocab_size=33,
        hidden_size=d,
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["attention_heads"],
        intermediate_size=4 * d,
        position_embedding_type="rotary",
        token_dropout=True,
        mask_token_id=32,
        pad_token_id=1,
        max_position_embeddings=1026,
        emb_layer_norm_before=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,
        attn_implementation="sdpa",
    )
    with torch.device(device):
        model = EsmModel(cfg, add_pooling_layer=False)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model.to(dtype).eval()
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    return model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--quick`` shrinks the set, the budgets and the seconds."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-size", default="3B", choices=sorted(ESM2_ARCH))
    ap.add_argument("--n", type=int, default=20000, help="proteins in the set")
    ap.add_argument("--seconds", type=float, default=15.0, help="timed seconds per method")
    ap.add_argument("--token-budget", type=int, default=65536, help="ours: tokens per packed batch")
    ap.add_argument("--hf-tokens", type=int, default=131072, help="HF: padded tokens per batch")
    ap.add_argument("--backend", default="auto", help="ours: attention backend")
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time ours with compile=True (GPU only)",
    )
    ap.add_argument("--methods", nargs="*", default=["original", "fair16", "hf-sdpa", "packed"])
    ap.add_argument("--fair-subset", type=int, default=6000, help="proteins batched for a/b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="small set, 1 s per method (smoke run)")
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.seconds, args.token_budget, args.hf_tokens = 200, 1.0, 4096, 8192
    return args


def model_flops(work: list[Work], p_nonemb: int, dim: int, layers: int) -> float:
    """Model FLOPs of ``work``, real tokens only: 2 P tokens + 4 L^2 dim per protein and layer."""
    return sum(2.0 * p_nonemb * w.tokens + 4.0 * dim * layers * w.sq for w in work)


def nonembedding_parameters(fair: torch.nn.Module) -> int:
    """Parameters of the transformer layers and the final layer norm (the FLOP count's P)."""
    return sum(
        p.numel()
        for n, p in fair.named_parameters()
        if n.startswith(("layers.", "emb_layer_norm_after"))
    )


@dataclass
class Run:
    """What every method's runner shares: the set, the fair-esm model, the rows so far."""

    args: argparse.Namespace
    device: torch.device
    name: str
    arch: dict
    peak: float
    seqs: list[str]
    fair: torch.nn.Module | None
    alphabet: object
    p_nonemb: int
    results: list[dict] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup(args: argparse.Namespace) -> Run:
    """Measure the matmul rate, make the protein set, build the random fair-esm model."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    name, arch = ESM2_ARCH[args.model_size]
    peak = mfu.measure_matmul_tflops(torch.bfloat16, n=8192 if cuda else 512)
    print(f"bf16 matmul rate: {peak:.1f} TFLOP/s" + ("" if cuda else " (CPU: fp32, meaningless)"))
    seqs = chunk_proteins(args.n, args.seed)
    t0 = time.perf_counter()
    fair, alphabet = random_model(args.seed, device, **arch)
    print(f"{name}: random weights built on {device} in {time.perf_counter() - t0:.1f} s")
    return Run(args, device, name, arch, peak, seqs, fair, alphabet, nonembedding_parameters(fair))


def record(run: Run, method: str, desc: str, seconds: float, work: list[Work]) -> None:
    """Append one method's row to ``run.results`` and print its one-line summary."""
    toks = sum(w.tokens for w in work)
    f = model_flops(work, run.p_nonemb, run.arch["embed_dim"], run.arch["num_layers"])
    row = {
        "method": method,
        "tokens_per_s": toks / seconds,
        "proteins_per_s": sum(w.n for w in work) / seconds,
        "model_tflops": f / seconds / 1e12,
        "mfu": f / seconds / 1e12 / run.peak,
        "timed_s": seconds,
        "timed_batches": len(work),
        "timed_proteins": sum(w.n for w in work),
        "timed_tokens": toks,
        "padding_fraction": 1 - toks / sum(w.padded for w in work),
        "description": desc,
    }
    run.results.append(row)
    print(
        f"  {method}: {row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']:.3f} "
        f"({row['timed_proteins']} proteins in {seconds:.1f} s)"
    )


def packed_batches(tokens: list, budget: int, seed: int, pin: bool) -> list[Work]:
    """Ours: first-fit-decreasing packed batches of ``budget`` tokens, in a random order."""
    work = []
    for idx in pack_ffd([len(t) for t in tokens], budget):
        b = make_batch([tokens[i] for i in idx])
        work.append(Work(b.pin_memory() if pin else b, [len(tokens[i]) for i in idx]))
    return shuffled(work, seed)


def run_packed(run: Run, method: str) -> str:
    """Time ours (``packed`` or ``packed+compile``); returns the attention backend it used."""
    args = run.args
    enc = ESMEncoder(
        run.fair,
        run.alphabet,
        spec=run.name,
        device=run.device,
        precision="bf16" if run.cuda else "fp32",
        backend=args.backend,
        compile=method.endswith("compile"),
    )
    work = packed_batches(enc.tokenize(run.seqs), args.token_budget, args.seed, run.cuda)

    def packed_step(w):
        return enc.embed_packed(w.payload.to(run.device, non_blocking=True)).cpu()

    sec, done = time_batches(packed_step, work, args.seconds, warmup=3)
    desc = f"packed bf16, token budget {args.token_budget}, backend {enc.backend}"
    record(run, method, desc + (", compiled" if enc.compiled else ""), sec, done)
    return enc.backend


def fair_step(run: Run, w: Work, half: bool = False) -> list[torch.Tensor]:
    """fair-esm's forward on one batch; last-layer representations to the CPU, then means."""
    toks, keep = w.payload
    last = run.arch["num_layers"]
    with torch.no_grad():
        rep = run.fair(toks.to(run.device, non_blocking=True), repr_layers=[last])[
            "representations"
        ][last]
    rep = (rep.float() if half else rep).to("cpu")
    return [rep[i, 1 : k + 1].mean(0).clone() for i, k in enumerate(keep)]


def run_fair(run: Run, methods: list[str]) -> None:
    """Time the original (fp32) and fair16 (model.half(), CUDA only) on a subset."""
    subset = run.seqs[: run.args.fair_subset]  # fair-esm's tokenizer is slow; same distribution
    work = shuffled(fair_batches(run.alphabet, subset), run.args.seed)
    if "original" in methods:
        sec, done = time_batches(lambda w: fair_step(run, w), work, run.args.seconds)
        desc = "fair-esm fp32, 2048-token length-sorted batches (subset timed)"
        record(run, "original", desc, sec, done)
    if "fair16" in methods and run.cuda:
        run.fair.half()
        for layer in run.fair.layers:  # fair-esm caches rotary cos/sin per length: drop fp32 ones
            layer.self_attn.rot_emb._seq_len_cached = None
        sec, done = time_batches(lambda w: fair_step(run, w, True), work, run.args.seconds)
        record(run, "fair16", "fair-esm fp16 (model.half()), 2048-token batches", sec, done)


def free_fair(run: Run) -> None:
    """Drop fair-esm's weights before the HF model is built."""
    run.fair = None
    gc.collect()
    if run.cuda:
        torch.cuda.empty_cache()


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` over each row's residues (BOS, EOS and padding left out), in fp32."""
    pos = torch.arange(mask.shape[1], device=mask.device)
    weight = mask & (pos >= 1) & (pos < mask.sum(1, keepdim=True) - 1)
    weight = weight.float()
    return (h.float() * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1)


def run_hf(run: Run) -> None:
    """Time transformers' EsmModel (sdpa, bf16) on padded batches in a random order."""
    args, device, pad = run.args, run.device, run.alphabet.padding_idx
    model = build_hf(run.arch, device)
    work = hf_batches(Tokenizer(run.alphabet)(run.seqs), pad, args.hf_tokens, args.seed)

    def hf_step(w):
        ids, lengths = w.payload
        ids = ids.to(device, non_blocking=True)
        mask = ids.ne(pad)
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return masked_mean(h, mask).cpu()

    sec, done = time_batches(hf_step, work, args.seconds)
    desc = f"transformers EsmModel sdpa bf16, ~{args.hf_tokens} padded tokens/batch, random order"
    record(run, "hf-sdpa", desc, sec, done)


def run_methods(run: Run, methods: list[str]) -> dict[str, str]:
    """Every method asked for, ours first; returns ours' attention backend per method."""
    ours = {m: run_packed(run, m) for m in methods if m.startswith("packed")}
    if "original" in methods or "fair16" in methods:
        run_fair(run, methods)
    free_fair(run)
    if "hf-sdpa" in methods:
        run_hf(run)
    return ours


def report(results: list[dict]) -> dict[str, float]:
    """Print the table and the speed-ups over the original; returns the speed-ups."""
    mfu.print_table(
        results,
        ["method", "tokens_per_s", "proteins_per_s", "model_tflops", "mfu", "timed_proteins"],
    )
    by = {r["method"]: r for r in results}
    speedups = {
        m: by[m]["tokens_per_s"] / by["original"]["tokens_per_s"] for m in by if "original" in by
    }
    if speedups:
        print("speed-up over the original:", {k: round(v, 2) for k, v in speedups.items()})
    return speedups


def build_payload(run: Run, ours: dict[str, str], speedups: dict[str, float]) -> dict:
    """The JSON written by ``--out``."""
    args, seqs = run.args, run.seqs
    lengths = [len(s) for s in seqs]
    return {
        "bench": "esm2_throughput",
        "machine": mfu.machine_info(),
        "model": run.name,
        "architecture": run.arch,
        "weights": f"random, seed {args.seed}",
        "nonembedding_parameters": run.p_nonemb,
        "flops_definition": "2 * nonembedding_parameters * real_tokens + sum over proteins of "
        "layers * 4 * L^2 * dim (QK^T and AV; L = tokens incl. BOS/EOS); padding never counted",
        "mfu_definition": "model FLOP/s / measured bf16 dense matmul rate (8192^3), all methods",
        "timing": "host token tensors -> device -> forward -> pooled embeddings on the host; "
        "tokenization not timed; warm-up batches excluded; each method's batches are made as "
        "that method makes them, then processed in a random order (a timed prefix is a fair "
        "sample); original/fair16 batch the first --fair-subset proteins",
        "bf16_matmul_tflops": run.peak,
        "n_proteins": len(seqs),
        "fair_subset": min(args.fair_subset, len(seqs)),
        "protein_lengths": {
            "min": min(lengths),
            "max": max(lengths),
            "mean": float(np.mean(lengths)),
        },
        "seconds_per_method": args.seconds,
        "token_budget": args.token_budget,
        "hf_tokens_per_batch": args.hf_tokens,
        "packed_backends": ours,
        "results": run.results,
        "speedup_over_original": speedups,
    }


def main(argv: list[str] | None = None) -> int:
    """Time every method asked for; print the table; write the JSON to ``--out`` if given."""
    args = parse_args(argv)
    run = setup(args)
    methods = list(args.methods) + (["packed+compile"] if args.compile and run.cuda else [])
    ours = run_methods(run, methods)
    speedups = report(run.results)
    mfu.write_json(args.out, build_payload(run, ours, speedups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
